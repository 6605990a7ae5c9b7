"""`elan-deploy quantize`: explicit Q/DQ INT8 ONNX, calibrated on T91, float where PSNR needs it."""

from __future__ import annotations

import argparse
from pathlib import Path

from elan_deploy.commands.common import add_model_args, check_onnx_matches
from elan_deploy.console import print_table, progress, stdout
from elan_deploy.errors import ElanDeployError


def _fp32_onnx(args: argparse.Namespace) -> tuple[Path, str, int]:
    """(FP32 ONNX, model id, scale): the given --onnx, or the model exported into the cache."""
    from elan_deploy.model import load_model
    from elan_deploy.runtimes import ModelSource

    loaded = load_model(args.model, args.scale)
    if args.onnx is not None:
        check_onnx_matches(args.onnx, loaded.config.scale)
        return args.onnx, loaded.config.model_id, loaded.config.scale
    source = ModelSource(loaded, guard=not args.no_guard)  # exported into the cache root's onnx/ folder
    return source.onnx_path(), loaded.config.model_id, loaded.config.scale


def _floor(text: str) -> float | None:
    """`--hard-edge-floor-db`: dB, or `none` for no floor."""
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of dB; give e.g. 30, or none") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value:g} dB is not above 0; give e.g. 30, or none")
    return value


def run_quantize(args: argparse.Namespace) -> int:
    from elan_deploy.calibration.int8 import default_config, write_int8
    from elan_deploy.provenance import write_document

    config = default_config(
        method=args.method, budget_db=args.budget_db, patches=args.patches, patch_size=args.patch_size, seed=args.seed,
        max_float_nodes=args.max_float_nodes, percentile=args.percentile, hard_edge_floor_db=args.hard_edge_floor_db,
    )
    from elan_deploy.provenance import check_output_file

    for path, flag in ((args.output, "--output"), (args.json, "--json")):
        if path is not None:
            check_output_file(path, flag, args.overwrite)
    if args.output is None:  # the default ./MODEL_ID.int8.onnx
        from elan_deploy.model import load_model

        check_output_file(Path(f"{load_model(args.model, args.scale).config.model_id}.int8.onnx"), "--output", args.overwrite)
    if args.output is not None and args.json is not None and args.output.resolve() == args.json.resolve():
        raise ElanDeployError(f"--json and --output name the same file '{args.output}'; give each its own path")
    if args.output is not None and args.onnx is not None and args.output.resolve() == args.onnx.resolve():
        raise ElanDeployError(f"--output '{args.output}' is the input --onnx; pass another path for the INT8 model")
    with progress() as bar:
        task = bar.add_task("export FP32 ONNX", total=None)
        fp32, model_id, scale = _fp32_onnx(args)
        output = args.output or Path(f"{model_id}.int8.onnx")
        report = write_int8(
            fp32, output, config, scale=scale, calib_dir=args.calib_dir, progress=lambda msg: bar.update(task, description=msg),
            allow_over_budget=args.allow_over_budget,
        )
    if args.sensitivity and report.sensitivities:
        print_table(
            "layer-group sensitivity on held-out T91 (only that group in INT8)",
            ("group", "kind", "nodes", "output PSNR vs FP32 (dB)", "kept float"),
            [(s.group, s.kind, s.nodes, round(s.fidelity_db, 2), "yes" if s.group in report.float_groups else "") for s in report.sensitivities],
        )
    score = report.score
    print_table(
        f"{model_id} INT8 Q/DQ, held-out T91 x{scale} (budget {config.budget_db:g} dB on mean + 1 s.e.)",
        ("method", "float nodes", "drop (dB)", "± s.e.", "met", "time (s)"),
        [(
            report.config.method, len(report.float_nodes), round(score.drop_db, 4), round(score.stderr_db, 4),
            "yes" if report.met else "NO", f"{report.seconds.get('total', 0.0):.0f}",
        )],
    )
    stdout.print(f"kept float: {', '.join(report.float_groups) or 'nothing'}")
    if report.hard_edge_db is not None:
        stdout.print(
            f"hard edges (held-out T91 in saturated colours): worst {report.hard_edge_db:.2f} dB to FP32, floor "
            f"{config.hard_edge_floor_db:g} dB {'held' if report.hard_edge_met else 'NOT held'}"
            + (f"; {len(report.hard_edge_groups)} groups kept float for it" if report.hard_edge_groups else "")
        )
    stdout.print(f"held-out Y-PSNR: FP32 {report.fp32_psnr:.3f} dB, INT8 {score.psnr:.3f} dB; wrote {report.path}")
    if args.json:
        write_document(args.json, report.to_json(model_id, scale))
    return 0 if report.met else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quantize", help="INT8 Q/DQ ONNX calibrated on T91, mixed precision under a PSNR budget")
    add_model_args(p)
    p.add_argument("--onnx", type=Path, help="quantize this FP32 ONNX instead of exporting the model")
    p.add_argument("--method", default="entropy", choices=("minmax", "entropy", "percentile"), help="activation range estimator [entropy]")
    p.add_argument("--percentile", type=float, default=99.999, help="|x| percentile for --method percentile [99.999]")
    p.add_argument("--budget-db", type=float, default=0.05, help="largest held-out Y-PSNR drop vs FP32 (mean + 1 s.e.) [0.05]")
    p.add_argument("--max-float-nodes", type=int, help="cap on Conv/MatMul nodes kept in float [no cap]")
    p.add_argument(
        "--hard-edge-floor-db", type=_floor, default=30.0,
        help="lowest PSNR to FP32 on held-out T91 crops cut to saturated colours; more groups stay float until it holds, none: off [30]",
    )
    p.add_argument("--allow-over-budget", action="store_true", help="write the best model even if the budget is not met (exit 1)")
    p.add_argument("--calib-dir", type=Path, help="calibration images (never a test set) [T91 under the data root, else the bundled subset]")
    p.add_argument("--patches", type=int, default=64, help="calibration LR patches [64]")
    p.add_argument("--patch-size", type=int, default=64, help="LR patch side, a multiple of 16 [64]")
    p.add_argument("--seed", type=int, default=0, help="seed of the patch positions [0]")
    p.add_argument("--output", type=Path, help="INT8 ONNX to write [./MODEL_ID.int8.onnx]")
    p.add_argument("--json", type=Path, help="write the report (float set, drops, sensitivities) as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace existing --output/--json files even if this tool did not write them")
    p.add_argument("--sensitivity", action="store_true", help="also print every layer group's measured sensitivity")
    p.set_defaults(handler=run_quantize)
