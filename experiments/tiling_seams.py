"""Seam error of tiled upscaling against the untiled run, per tile overlap.

    python -m experiments.tiling_seams [--image PATH] [--size 200x300] [--tile 128] [--overlaps 0,16,32,48,64]

Runs ONNX Runtime FP32 on a natural image crop, untiled and tiled at each overlap, and prints
the share of output values within 1 gray level of the untiled output, the max difference and
the PSNR between the two, with and without the wrap-aware splice at image edges.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from elan_deploy import geometry
from elan_deploy.console import print_table
from elan_deploy.imaging import read_image
from elan_deploy.metrics import psnr
from elan_deploy.model import load_bundled
from elan_deploy.runtimes import EngineLoader, ModelSource
from elan_deploy.upscale import Upscaler

DEFAULT_IMAGE = Path(__file__).resolve().parents[2] / "shared" / "data" / "B100" / "HR" / "img_001.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--size", default="200x300", help="HxW crop used as the LR input")
    parser.add_argument("--tile", type=int, default=128)
    parser.add_argument("--overlaps", default="0,16,32,48,64")
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    image = read_image(args.image)[:h, :w].astype(np.float32)
    engine = EngineLoader(ModelSource(load_bundled()), "onnxruntime", "fp32").open()
    reference = np.round(Upscaler(engine, 4, tile=None)(image)).clip(0, 255)
    rows = []
    original_context = geometry.WRAP_CONTEXT  # read by geometry.wrap_aware_indices, which the Upscaler calls per tile
    try:
        for splice in (True, False):
            geometry.WRAP_CONTEXT = original_context if splice else 10**9  # a context larger than any tile disables the splice
            for overlap in (int(v) for v in args.overlaps.split(",")):
                tiled = np.round(Upscaler(engine, 4, tile=args.tile, overlap=overlap)(image)).clip(0, 255)
                diff = np.abs(tiled - reference)
                rows.append(("yes" if splice else "no", overlap, f"{(diff <= 1).mean() * 100:.3f} %", int(diff.max()), f"{psnr(tiled, reference):.2f}"))
    finally:
        geometry.WRAP_CONTEXT = original_context
    print_table(
        f"tiled vs untiled, {args.image.name} {h}x{w} LR, tile {args.tile}, ONNX Runtime fp32",
        ("edge splice", "overlap", "within 1 level", "max diff", "PSNR dB"), rows,
    )


if __name__ == "__main__":
    main()
