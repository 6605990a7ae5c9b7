"""Flags shared by several subcommands."""

from __future__ import annotations

import argparse
import atexit
import shutil
import tempfile
from pathlib import Path


def scratch_dir() -> Path:
    """A private folder for `--no-cache` builds, removed when the process exits."""
    path = Path(tempfile.mkdtemp(prefix="elan-deploy-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="elan-light", help="config name (bundled weights) or checkpoint path [elan-light]")
    parser.add_argument("--scale", type=int, default=4, choices=(2, 3, 4), help="upscaling factor [4]")


def add_engine_args(parser: argparse.ArgumentParser, default_runtime: str = "onnxruntime") -> None:
    """Runtime, precision, shapes, export strategies and cache flags (build, upscale, eval, bench)."""
    from elan_deploy.runtimes import RUNTIME_NAMES

    parser.add_argument("--runtime", default=default_runtime, help=f"one of {', '.join(RUNTIME_NAMES)} [{default_runtime}]")
    parser.add_argument("--precision", default="fp32", help="fp32, fp16, bf16 or int8 [fp32]")
    parser.add_argument("--shapes", help="engine input shapes: NxCxHxW (static) or min:opt:max [1x3x16x16:1x3x192x320:4x3x512x512]")
    parser.add_argument("--onnx", type=Path, help="use this exported ONNX instead of exporting the model")
    parser.add_argument("--shift", default="depthwise", help="shift-conv export strategy [depthwise]")
    parser.add_argument("--attention", default="shared", help="attention export strategy [shared]")
    parser.add_argument("--threads", type=int, help="inference threads [runtime default]")
    parser.add_argument("--cache-dir", type=Path, help="engine cache folder [$ELAN_DEPLOY_CACHE or ~/.cache/elan-deploy]")
    parser.add_argument("--no-cache", action="store_true", help="ignore the cache: build into a scratch folder removed on exit")


def engine_from_args(args: argparse.Namespace):
    """(ModelSource, Engine, ShapeRange) for the flags of `add_engine_args` and `add_model_args`."""
    from elan_deploy.model import load_model
    from elan_deploy.runtimes import DEFAULT_SHAPES, BuildOptions, EngineCache, ModelSource, ShapeRange, open_engine
    from elan_deploy.runtimes.cache import default_cache_dir

    loaded = load_model(args.model, args.scale)
    cache_root = scratch_dir() / "engines" if args.no_cache else args.cache_dir or default_cache_dir()
    source = ModelSource(loaded, shift=args.shift, attention=args.attention, onnx=args.onnx, work_dir=cache_root.parent / "onnx")
    if args.onnx is not None:
        check_onnx_matches(args.onnx, loaded.config.scale)
    shapes = ShapeRange.parse(args.shapes) if args.shapes else DEFAULT_SHAPES
    engine = open_engine(source, args.runtime, args.precision, shapes, BuildOptions(threads=args.threads), EngineCache(cache_root))
    return source, engine, shapes


def check_onnx_matches(path: Path, scale: int) -> None:
    from elan_deploy.errors import ElanDeployError
    from elan_deploy.export.metadata import read_props

    if not path.is_file():
        raise ElanDeployError(f"ONNX file '{path}' does not exist; run `elan-deploy export` first")
    try:
        props = read_props(path)
    except Exception as exc:  # onnx raises DecodeError and others for corrupt files
        raise ElanDeployError(f"cannot read ONNX '{path}': {type(exc).__name__}; re-export it") from None
    found = props.get("scale")
    if found is not None and int(found) != scale:
        raise ElanDeployError(f"scale mismatch: '{path.name}' is x{found} but x{scale} was requested; pass --scale {found}")
