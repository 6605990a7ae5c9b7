"""`elan-deploy diff ENGINE ENGINE [...]`: every engine against the first, on natural images.

Built on Polygraphy (see `elan_deploy.diff`): the output table, `--layers` for the first
tensor that diverges, and `--save-inputs/--save-outputs` files that `polygraphy run` loads,
which is how TensorRT on a GPU machine is checked against a reference made here.
Exit 0 when every engine passes, 1 when any fails (named), 2 on bad usage.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from pathlib import Path

from elan_deploy.console import fmt, print_table, stderr
from elan_deploy.errors import ElanDeployError

# Ops whose outputs the per-layer table prints (every tensor is in the JSON and the plot).
TABLE_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "Softmax", "Attention", "DepthToSpace"})


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _check_paths(args: argparse.Namespace) -> None:
    """Every output writable, distinct, none of them an input, and none a file this tool did not
    write (unless --overwrite), before any work."""
    from elan_deploy.provenance import check_output_file

    outputs = {flag: path for flag, path in (("--json", args.json), ("--save-inputs", args.save_inputs), ("--save-outputs", args.save_outputs)) if path}
    for flag, path in outputs.items():
        check_output_file(path, flag, args.overwrite)
    if args.json is not None and args.layers:
        check_output_file(plot_path(args.json), "--layers plot", args.overwrite)
    resolved: dict[Path, str] = {}
    inputs = [p for p in (args.onnx,) if p is not None]
    for flag, path in outputs.items():
        real = Path(path).resolve()
        if real in resolved:
            raise ElanDeployError(f"{flag} and {resolved[real]} name the same file '{path}'; give each output its own path")
        if any(real == Path(i).resolve() for i in inputs):
            raise ElanDeployError(f"{flag} '{path}' is the input model; choose another output path")
        if args.images is not None and real.parent == Path(args.images).resolve():
            raise ElanDeployError(f"{flag} '{path}' is inside the --images folder; write it elsewhere")
        resolved[real] = flag


def _command_line(args: argparse.Namespace) -> str:
    """The command as typed when run as `elan-deploy`; otherwise (called in-process) rebuilt from the engines."""
    if Path(sys.argv[0]).name == "elan-deploy" and len(sys.argv) > 1 and sys.argv[1] == "diff":
        return shlex.join(["elan-deploy", *sys.argv[1:]])
    return shlex.join(["elan-deploy", "diff", *args.engines])


def plot_path(json_path: Path) -> Path:
    """The layer plot beside the JSON: results.json -> results.layers.png."""
    return Path(json_path).with_suffix(".layers.png")


def _psnr(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return "identical" if value == math.inf else f"{value:.2f}"


def _images_label(folder: Path) -> str:
    from elan_deploy.diff.inputs import default_image_dir

    return "bundled T91 samples" if Path(folder).resolve() == default_image_dir().resolve() else str(folder)


def _print_outputs(result) -> None:
    c = result.config
    rows = []
    for r in result.rows:
        status = "reference" if r.reference and r.passed else ("pass" if r.passed else "FAIL")
        rows.append((
            r.engine, r.precision_used or "–", fmt(r.max_abs_error, 4), fmt(r.mean_abs_error, 5), _psnr(r.psnr_db),
            _psnr(r.worst_psnr_db), r.nonfinite, status,
        ))
    tolerance = f"PSNR >= {c.tolerances.psnr_db:g} dB"
    if c.tolerances.elementwise:
        tolerance += f", every value within atol {c.tolerances.atol or 0:g} or rtol {c.tolerances.rtol or 0:g}"
    print_table(
        f"{_images_label(result.inputs.folder)}: {c.iterations} x {'x'.join(map(str, c.shape))} against {c.engines[0]} ({tolerance})",
        ("engine", "ran", "max abs err", "mean abs err", "PSNR dB", "worst batch dB", "NaN/Inf", "result"),
        rows,
    )


def _print_layers(result, all_layers: bool) -> None:
    from elan_deploy.diff.layers import table_rows

    threshold = result.config.layer_psnr_db
    for report in result.layer_reports or []:
        rows = table_rows(report, None if all_layers else TABLE_OPS)
        shown = "every tensor" if all_layers else f"{len(rows)} of them: outputs of {', '.join(sorted(TABLE_OPS))} and the first divergence"
        print_table(
            f"{report.engine} against {result.config.engines[0]}, layer by layer: {len(report.rows)} tensors compared ({shown})",
            ("tensor", "op", "depth", "max abs err", "PSNR dB", "result"),
            [(r.tensor, r.op, r.depth, fmt(r.max_abs_error, 4), _psnr(r.psnr_db), "pass" if r.passed else "DIVERGES") for r in rows],
        )
        first = next((r for r in report.rows if not r.passed), None)
        if first is None:
            stderr.print(f"{report.engine}: no tensor below {threshold:g} dB", markup=False)
        else:
            stderr.print(
                f"{report.engine}: first divergence at '{first.tensor}' ({first.op}, depth {first.depth}): "
                f"{_psnr(first.psnr_db)} dB < {threshold:g} dB", markup=False,
            )
    for note in result.layer_notes:
        stderr.print(note, markup=False)


def run_diff_command(args: argparse.Namespace) -> int:
    from elan_deploy.commands.common import source_from_args
    from elan_deploy.console import progress
    from elan_deploy.diff.engines import polygraphy_logging
    from elan_deploy.diff.inputs import save_inputs
    from elan_deploy.diff.outputs import Tolerances
    from elan_deploy.diff.run import DiffConfig, run_diff, save_reference_outputs
    from elan_deploy.diff.spec import parse_engine_specs
    from elan_deploy.provenance import write_document
    from elan_deploy.provenance import record_file
    from elan_deploy.runtimes.base import parse_shape

    specs = parse_engine_specs(args.engines)
    shape = parse_shape(args.shape)
    _check_paths(args)
    if args.images is not None and not Path(args.images).is_dir():
        raise ElanDeployError(f"--images '{args.images}' is not a folder; pass a folder of photographs")
    config = DiffConfig(
        engines=specs, shape=shape, iterations=args.iterations, images=args.images,
        tolerances=Tolerances(args.psnr_threshold, args.atol, args.rtol), threads=args.threads, layers=args.layers,
        layer_psnr_db=args.layer_psnr_threshold, layer_budget_mb=args.layer_memory_mb, verbose=args.verbose,
    )
    source = source_from_args(args)
    with progress() as bar:
        task = bar.add_task("diff", total=None)
        result = run_diff(source, source.work_dir.parent, config, progress=lambda message: bar.update(task, description=message))
    _print_outputs(result)
    if args.layers:
        _print_layers(result, args.all_layers)
    with polygraphy_logging(args.verbose):
        if args.save_inputs:  # Polygraphy's JSON has no room for a marker: a record beside it says it is ours
            save_inputs(result.inputs.feeds, args.save_inputs)
            record_file(args.save_inputs)
        if args.save_outputs:
            save_reference_outputs(result, args.save_outputs)
            record_file(args.save_outputs)
    if args.json:
        write_document(args.json, result.to_json(_command_line(args)))
        if args.layers and result.layer_reports:
            from elan_deploy.diff.plot import plot_available, plot_layers

            if (reason := plot_available()) is None:
                plot_layers(result.layer_reports, config.layer_psnr_db, plot_path(args.json), f"{source.model_id}: per-tensor PSNR against {specs[0]}")
                record_file(plot_path(args.json))
            else:
                stderr.print(reason, markup=False)
    for row in result.failed:
        stderr.print(f"FAILED {row.engine}: {'; '.join(row.reasons)}", markup=False)
    if result.failed:
        stderr.print(f"{len(result.failed)} of {len(result.rows)} engines failed: {', '.join(r.engine for r in result.failed)}", markup=False)
        return 1
    others = len(result.rows) - 1
    stderr.print(f"{'the engine matches' if others == 1 else f'all {others} engines match'} {specs[0]}", markup=False)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from elan_deploy.commands.common import add_cache_args, add_model_args, positive_int
    from elan_deploy.export.strategies import ATTENTION_STRATEGIES, DEFAULT_WINDOWS, SHIFT_STRATEGIES, WINDOW_STRATEGIES

    p = sub.add_parser(
        "diff", help="engines against a reference (Polygraphy): max/mean error, PSNR, NaN/Inf, layer by layer (exit 1 if any fails)",
        description="Compare engines (RUNTIME:PRECISION) against the first one on natural images, with Polygraphy.",
    )
    p.add_argument("engines", nargs="+", metavar="ENGINE", help="RUNTIME:PRECISION, e.g. onnxruntime:fp32 openvino:bf16 onnxruntime:int8; the first is the reference")
    add_model_args(p)
    p.add_argument("--shape", default="1x3x192x320", help="engine input NxCxHxW, H and W multiples of 16 [1x3x192x320]")
    p.add_argument("--images", type=Path, help="folder of photographs to feed [the bundled T91 samples]")
    p.add_argument("--iterations", type=positive_int, default=4, help="batches to run, each of N images [4]")
    p.add_argument("--psnr-threshold", type=_non_negative, default=40.0, help="an engine fails below this output PSNR (dB, peak 255) in any batch [40]")
    p.add_argument("--atol", type=_non_negative, help="also fail when any value differs by more than atol and rtol (Polygraphy's element-wise check)")
    p.add_argument("--rtol", type=_non_negative, help="relative tolerance of that check, relative to the reference")
    p.add_argument("--onnx", type=Path, help="use this exported ONNX for the ONNX-based engines instead of exporting the model")
    p.add_argument("--shift", default="depthwise", choices=SHIFT_STRATEGIES, help="shift-conv export strategy [depthwise]")
    p.add_argument("--attention", default="shared", choices=ATTENTION_STRATEGIES, help="attention export strategy [shared]")
    p.add_argument("--windows", default=DEFAULT_WINDOWS, choices=WINDOW_STRATEGIES, help=f"window partition export strategy [{DEFAULT_WINDOWS}]")
    p.add_argument("--json", type=Path, help="write the results (and with --layers every tensor's numbers) here")
    p.add_argument("--layers", action="store_true", help="also compare every intermediate tensor (Polygraphy mark-all) on the first image and name the first divergence")
    p.add_argument("--layer-psnr-threshold", type=_non_negative, default=40.0, help="a tensor diverges below this PSNR (dB, peak = max |reference tensor|) [40]")
    p.add_argument("--all-layers", action="store_true", help="print every tensor in the layer table, not only Conv/MatMul/Softmax/... outputs")
    p.add_argument("--layer-memory-mb", type=positive_int, default=1500, help="marked tensors per run up to this size; more runs when they do not fit [1500]")
    p.add_argument("--save-inputs", type=Path, help="write the inputs as Polygraphy JSON (polygraphy run --load-inputs)")
    p.add_argument("--save-outputs", type=Path, help="write the reference's outputs as Polygraphy RunResults JSON (polygraphy run --load-outputs)")
    p.add_argument("--overwrite", action="store_true", help="replace existing --json/--save-* files even if this tool did not write them")
    add_cache_args(p)
    p.add_argument("--verbose", action="store_true", help="show Polygraphy's own log")
    p.set_defaults(handler=run_diff_command)
