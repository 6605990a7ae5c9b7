"""`elan-deploy export`: checkpoint → verified ONNX (DeployELAN, simplified, checked)."""

from __future__ import annotations

import argparse
import contextlib
from dataclasses import asdict
from pathlib import Path

from elan_deploy.commands.common import add_model_args
from elan_deploy.console import LiveSteps, print_table
from elan_deploy.errors import ElanDeployError


def default_output(model_id: str) -> Path:
    return Path("build") / f"{model_id}.fp32.onnx"


def run_export(args: argparse.Namespace) -> int:
    from elan_deploy.export import ExportConfig, export_onnx
    from elan_deploy.provenance import write_document
    from elan_deploy.calibration.ranges import calibrated_guard
    from elan_deploy.model import load_model

    config = ExportConfig(
        shift=args.shift, attention=args.attention, windows=args.windows, opset=args.opset, dynamic_batch=not args.static_batch,
        simplify=not args.no_simplify, verify=not args.no_verify,
    )
    from elan_deploy.provenance import check_output_file

    if args.json is not None:
        check_output_file(args.json, "--json", args.overwrite)
    loaded = load_model(args.model, args.scale)
    output: Path = args.output or default_output(loaded.config.model_id)
    if output.exists() and output.is_dir():
        raise ElanDeployError(f"output '{output}' is a folder; pass a file path such as {output / default_output(loaded.config.model_id).name}")
    if output.parent.is_dir():  # a missing folder is created below
        check_output_file(output, "--output", args.overwrite)
    if args.json is not None and Path(args.json).resolve() == output.resolve():
        raise ElanDeployError(f"--json and --output name the same file '{output}'; give each its own path")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ElanDeployError(f"cannot create output folder '{output.parent}': {exc.strerror or exc}") from None
    with contextlib.ExitStack() as stack:  # live steps: a new checkpoint's range calibration, then the export
        steps = LiveSteps(stack)
        guard = None if args.no_guard else calibrated_guard(loaded, progress=steps)
        steps.start(f"export {loaded.config.model_id} ({config.shift}, {config.attention}, opset {config.opset})", None)
        report = export_onnx(loaded, output, config, guard=guard)
    error = "not run" if report.max_abs_error is None else f"{report.max_abs_error:.2e}"
    print_table(
        f"{report.metadata.model_id} → ONNX",
        ("field", "value"),
        [
            ("output", str(report.path)),
            ("shift / attention / windows", f"{config.shift} / {config.attention} / {config.windows}"),
            ("opset", config.opset),
            ("inputs", "lr N,3,H,W float32 0..255 (H, W multiples of 16)" if config.dynamic_batch else "lr 1,3,H,W float32 0..255"),
            ("range guard", report.metadata.range_guard),
            ("simplifier", report.metadata.simplifier),
            ("nodes", report.node_count),
            ("max tensor rank", report.max_rank),
            ("max |ORT − reference|", error),
            ("size", f"{report.size_bytes / 1e6:.2f} MB"),
            ("sha256", report.sha256[:16]),
            ("time", f"{report.seconds:.1f} s"),
        ],
    )
    if args.json:
        record = {
            "schema": "elan-deploy/export/1",  # first: marks the file as this tool's (elan_deploy.provenance)
            "path": str(report.path), "config": asdict(config), "metadata": report.metadata.to_props(),
            "node_count": report.node_count, "op_counts": report.op_counts, "size_bytes": report.size_bytes,
            "sha256": report.sha256, "max_rank": report.max_rank, "max_abs_error": report.max_abs_error,
            "seconds": round(report.seconds, 3),
        }
        write_document(args.json, record)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from elan_deploy.export.strategies import ATTENTION_STRATEGIES, DEFAULT_OPSET, DEFAULT_WINDOWS, MAX_OPSET, MIN_OPSET, SHIFT_STRATEGIES, WINDOW_STRATEGIES

    p = sub.add_parser("export", help="export a checkpoint to a verified ONNX file")
    add_model_args(p)
    p.add_argument("--shift", default="depthwise", choices=SHIFT_STRATEGIES, help="shift-conv form [depthwise]")
    p.add_argument("--attention", default="shared", choices=ATTENTION_STRATEGIES, help="attention sharing form [shared]")
    p.add_argument("--windows", default=DEFAULT_WINDOWS, choices=WINDOW_STRATEGIES, help=f"window partition form: one Gather of pixels per group, or reshape chains [{DEFAULT_WINDOWS}]")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset, {MIN_OPSET}..{MAX_OPSET}; 23 turns 'sdpa' attention into the fused Attention op [{DEFAULT_OPSET}]")
    p.add_argument("--no-simplify", action="store_true", help="skip onnxsim/onnxslim")
    p.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime check against the reference")
    p.add_argument("--static-batch", action="store_true", help="fix the batch size at 1 (H and W stay dynamic)")
    p.add_argument("--output", "-o", type=Path, help="ONNX file to write [build/<model>-x<scale>.fp32.onnx]")
    p.add_argument("--json", type=Path, help="also write the export report as JSON here")
    p.add_argument("--overwrite", action="store_true", help="replace existing --output/--json files even if this tool did not write them")
    p.set_defaults(handler=run_export)
