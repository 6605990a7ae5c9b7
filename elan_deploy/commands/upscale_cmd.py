"""`elan-deploy upscale`: super-resolve an image or a folder of images with any engine."""

from __future__ import annotations

import argparse
import os
import warnings
from pathlib import Path

import numpy as np

from elan_deploy.commands.common import add_engine_args, add_model_args, engine_from_args
from elan_deploy.console import progress, stderr
from elan_deploy.errors import ElanDeployError
from elan_deploy.imaging import IMAGE_EXTENSIONS, list_images, read_image, write_image
from elan_deploy.upscale import DEFAULT_OVERLAP, DEFAULT_TILE, Upscaler


def plan_outputs(source: Path, output: Path) -> list[tuple[Path, Path]]:
    """(input, output) pairs: a file to a file or into a folder; a folder into a folder."""
    if not source.exists():
        raise ElanDeployError(f"input '{source}' does not exist; pass an image file or a folder of images")
    if source.is_dir():
        inputs = list_images(source)
        if not inputs:
            raise ElanDeployError(f"folder '{source}' holds no PNG/JPEG/BMP/TIFF images")
        if output.suffix.lower() in IMAGE_EXTENSIONS:
            raise ElanDeployError(f"input '{source}' is a folder, so -o must be a folder, not '{output.name}'")
        return [(p, output / f"{p.stem}.png") for p in inputs]
    if output.suffix.lower() in IMAGE_EXTENSIONS:
        return [(source, output)]
    return [(source, output / f"{source.stem}.png")]


def prepare_folder(folder: Path, create: bool) -> None:
    """Fail before any work if the output folder cannot be written."""
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ElanDeployError(f"cannot create output folder '{folder}' ({exc.strerror}); choose a writable -o") from None
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise ElanDeployError(f"output folder '{folder}' does not exist or is not writable; choose a writable -o")


def run_upscale(args: argparse.Namespace) -> int:
    pairs = plan_outputs(args.input, args.output)
    folder = pairs[0][1].parent
    prepare_folder(folder, create=folder == args.output)
    source, engine, shapes = engine_from_args(args)
    upscaler = Upscaler(engine, source.scale, tile=args.tile or None, overlap=args.overlap, batch=args.batch, shapes=shapes if shapes.is_static else None)
    with progress() as bar:
        task = bar.add_task(f"upscale x{source.scale} ({engine.info.runtime} {engine.info.precision_used})", total=len(pairs))
        for src, dst in pairs:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                image = read_image(src)
            for w in caught:
                stderr.print(f"warning: {w.message}", markup=False)
            write_image(dst, np.clip(np.round(upscaler(image.astype(np.float32))), 0, 255).astype(np.uint8))
            bar.advance(task)
    stderr.print(f"wrote {len(pairs)} image(s) to {folder}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("upscale", help="super-resolve an image or a folder of images")
    p.add_argument("input", type=Path, help="image file or folder")
    p.add_argument("-o", "--output", type=Path, required=True, help="output image file or folder (PNG)")
    add_model_args(p)
    add_engine_args(p)
    p.add_argument("--tile", type=int, default=DEFAULT_TILE, help=f"LR tile size above which images are tiled; 0 = never [{DEFAULT_TILE}]")
    p.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP, help=f"tile overlap in LR pixels [{DEFAULT_OVERLAP}]")
    p.add_argument("--batch", type=int, default=1, help="tiles per engine call [1]")
    p.set_defaults(handler=run_upscale)
