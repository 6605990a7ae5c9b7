"""Flags and steps shared by several subcommands."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from elan_deploy.errors import ElanDeployError

T = TypeVar("T")


def cache_root_from_args(args: argparse.Namespace) -> Path:
    """The cache root for `--cache-dir`/`--no-cache`: engines in `engines/`, exports in `onnx/`.

    `--no-cache` gives a private scratch folder, removed when the process exits.
    """
    from elan_deploy.scratch import cache_root, process_scratch_dir

    if args.no_cache:
        return process_scratch_dir()
    return args.cache_dir or cache_root()


def positive_int(text: str) -> int:
    """argparse type for counts (threads, batch, actors): a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="elan-light", help="config name (bundled weights) or checkpoint path [elan-light]")
    parser.add_argument("--scale", type=int, default=4, choices=(2, 3, 4), help="upscaling factor [4]")
    parser.add_argument("--no-guard", action="store_true",
                        help="run the unguarded paper model: no clamping of features to their T91 ranges "
                             "(the guard keeps text, QR codes and screenshots from exploding)")


def add_engine_args(parser: argparse.ArgumentParser, default_runtime: str = "onnxruntime", default_precision: str = "fp32") -> None:
    """Runtime, precision, shapes, export strategies and cache flags (build, upscale, eval, bench).

    `default_precision="auto"` lets the command pick the runtime's fastest native precision on
    this CPU (`resolve_auto_precision`), for commands that make images rather than measure.
    """
    from elan_deploy.export.strategies import ATTENTION_STRATEGIES, DEFAULT_WINDOWS, SHIFT_STRATEGIES, WINDOW_STRATEGIES
    from elan_deploy.runtimes import RUNTIME_NAMES

    if default_runtime == "auto":
        parser.add_argument("--runtime", default="auto", help=f"one of {', '.join(RUNTIME_NAMES)}, or auto: the fastest engine within "
                            "0.05 dB on this machine (your last bench, else BENCHMARKS.md's pick for this CPU; $ELAN_DEPLOY_ENGINE "
                            "overrides it) [auto]")
    else:
        parser.add_argument("--runtime", default=default_runtime, help=f"one of {', '.join(RUNTIME_NAMES)} [{default_runtime}]")
    if default_precision == "auto":
        parser.add_argument("--precision", default="auto",
                            help="fp32, fp16, bf16, int8, or auto: the runtime's fastest native precision on this CPU "
                                 "(bf16 for openvino/torch with avx512_bf16 or AMX, else fp32) [auto]")
    else:
        parser.add_argument("--precision", default=default_precision, help=f"fp32, fp16, bf16 or int8 [{default_precision}]")
    parser.add_argument("--shapes", help="engine input shapes: NxCxHxW (static) or min:opt:max [1x3x16x16:1x3x192x320:4x3x512x512]")
    parser.add_argument("--onnx", type=Path, help="use this exported ONNX instead of exporting the model")
    parser.add_argument("--shift", default="depthwise", choices=SHIFT_STRATEGIES, help="shift-conv export strategy [depthwise]")
    parser.add_argument("--attention", default="shared", choices=ATTENTION_STRATEGIES, help="attention export strategy [shared]")
    parser.add_argument("--windows", default=DEFAULT_WINDOWS, choices=WINDOW_STRATEGIES, help=f"window partition export strategy [{DEFAULT_WINDOWS}]")
    add_cache_args(parser)


def add_tiling_args(parser: argparse.ArgumentParser) -> None:
    """`--tile`, `--overlap`, `--batch`: how the Upscaler cuts images for the engine (upscale, serve)."""
    from elan_deploy.upscale import DEFAULT_OVERLAP, DEFAULT_TILE

    parser.add_argument("--tile", type=int, default=DEFAULT_TILE, help=f"LR tile size above which images are tiled; 0 = never [{DEFAULT_TILE}]")
    parser.add_argument("--overlap", type=int, default=None, help=f"tile overlap in LR pixels [{DEFAULT_OVERLAP}, at most half the tile]")
    parser.add_argument("--batch", type=positive_int, default=1, help="tiles per engine call [1]")


def add_cache_args(parser: argparse.ArgumentParser) -> None:
    """`--threads`, `--cache-dir`, `--no-cache`: how engines are loaded and where they are kept."""
    parser.add_argument("--threads", type=positive_int, help="inference threads [runtime default]")
    parser.add_argument("--cache-dir", type=Path, help="cache folder for engines and exports [$ELAN_DEPLOY_CACHE or ~/.cache/elan-deploy]")
    parser.add_argument("--no-cache", action="store_true", help="ignore the cache: build into a scratch folder removed on exit")


def resolve_auto_engine(args: argparse.Namespace) -> None:
    """Replace `--runtime auto` and `--precision auto` by what they stand for here, in place; the
    runtime's pick is said in one line (`bench.default_engine`)."""
    if str(args.runtime).lower() == "auto":
        from elan_deploy.bench.default_engine import resolve
        from elan_deploy.console import stderr
        from elan_deploy.cpu import cpu_caps
        from elan_deploy.runtimes import is_available

        asked = None if str(args.precision).lower() == "auto" else str(args.precision).lower()
        choice = resolve(cache_root_from_args(args), asked, cpu_caps(), is_available)
        args.runtime, args.precision = choice.runtime, choice.precision
        stderr.print(choice.line(), markup=False, soft_wrap=True)
    resolve_auto_precision(args)


def resolve_auto_precision(args: argparse.Namespace) -> None:
    """Replace `--precision auto` by the precision it stands for on this CPU, in place."""
    if str(args.precision).lower() == "auto":
        from elan_deploy.cpu import fastest_native_precision

        args.precision = fastest_native_precision(args.runtime)


def source_from_args(args: argparse.Namespace):
    """The `ModelSource` for `--model`, `--scale`, `--no-guard`, `--onnx`, the export strategies and the cache flags."""
    from elan_deploy.model import load_model
    from elan_deploy.runtimes import ModelSource

    loaded = load_model(args.model, args.scale)
    if args.onnx is not None:
        check_onnx_matches(args.onnx, loaded.config.scale)
    return ModelSource(
        loaded, shift=args.shift, attention=args.attention, windows=args.windows, onnx=args.onnx,
        work_dir=cache_root_from_args(args) / "onnx", guard=not args.no_guard,
    )


def loader_from_args(args: argparse.Namespace):
    """The `EngineLoader` for the flags of `add_engine_args` and `add_model_args`."""
    from elan_deploy.runtimes import EngineLoader, ShapeRange

    source = source_from_args(args)
    shapes = ShapeRange.parse(args.shapes) if args.shapes else None
    return EngineLoader(source, args.runtime, args.precision, shapes, args.threads, source.work_dir.parent)


def with_first_use_steps(loader, make: Callable[[Callable[[str], None] | None], T]) -> T:
    """`make(on_phase)` (the loader's `open` or `build`) with a first use's range calibration and
    engine build shown as live steps, the build naming its phase (plain lines with a heartbeat in
    a log); the view is gone before the command prints its own output, and nothing is drawn when
    everything is cached."""
    from elan_deploy.console import LiveSteps, quiet_library_progress

    with contextlib.ExitStack() as stack:
        stack.enter_context(quiet_library_progress())  # NNCF's bars name no step; the build step says what runs
        return make(loader.start_first_use(LiveSteps(stack)))


def load_onnx_file(path: Path, *, weights: bool = False):
    """Parse an ONNX file or fail with one line saying what is wrong with it and what to do.

    Catches what protobuf would accept silently (a zero-byte file parses as an empty model)
    and external-data files that are missing beside the model.
    """
    import onnx

    path = Path(path)
    if path.is_dir():
        raise ElanDeployError(f"'{path}' is a folder; pass an .onnx file")
    if not path.is_file():
        raise ElanDeployError(f"ONNX file '{path}' does not exist; run `elan-deploy export` first")
    if path.stat().st_size == 0:
        raise ElanDeployError(f"ONNX file '{path}' is empty (0 bytes); export it again with `elan-deploy export`")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - protobuf raises DecodeError, RuntimeWarning-as-error and others
        raise ElanDeployError(f"'{path}' is not an ONNX model: protobuf cannot parse it (truncated or another file type); export it again") from None
    if not model.graph.node or not model.graph.input or not model.graph.output:
        raise ElanDeployError(f"'{path}' holds no graph (no nodes, inputs or outputs); export it again with `elan-deploy export`")
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            location = next((e.value for e in tensor.external_data if e.key == "location"), "")
            if not (path.parent / location).is_file():
                raise ElanDeployError(
                    f"'{path}' keeps weights in external file '{location}', which is missing; put it next to the model"
                )
    if weights:
        onnx.load_external_data_for_model(model, str(path.parent))
    return model


def check_onnx_matches(path: Path, scale: int) -> None:
    model = load_onnx_file(path)
    found = {p.key: p.value for p in model.metadata_props}.get("scale")
    if found is not None and int(found) != scale:
        raise ElanDeployError(f"scale mismatch: '{path.name}' is x{found} but x{scale} was requested; pass --scale {found}")


def precision_differs(asked: str, used: str) -> bool:
    """True when a runtime ran another precision than asked (int8 engines' float parts aside)."""
    from elan_deploy.runtimes import Precision

    return used.split("+")[0] != Precision.parse(asked).value


def warn_if_precision_differs(info, asked: str) -> None:
    """One warning line when the runtime ran another precision than asked (e.g. f32 for bf16 on AVX2)."""
    from elan_deploy.console import stderr

    if precision_differs(asked, info.precision_used):
        stderr.print(f"warning: asked for {asked}, {info.runtime} ran {info.precision_used} on this CPU", markup=False)
