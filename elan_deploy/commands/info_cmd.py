"""`elan-deploy info`: what is inside an ONNX file (ops, IO, metadata, rank and domain checks)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from elan_deploy.console import print_table
from elan_deploy.errors import ElanDeployError

DEFAULT_PROBE = (1, 3, 192, 320)


def _load(path: Path) -> Any:
    from elan_deploy.commands.common import load_onnx_file

    return load_onnx_file(path, weights=True)


def _probe_shape(inputs: tuple, requested: str | None) -> tuple[int, ...] | None:
    """The shape to check ranks at: --shape, else the input's own static shape, else 1x3x192x320."""
    from elan_deploy.export.graph_checks import parse_shape

    if requested:
        return parse_shape(requested)
    if len(inputs) != 1:
        return None
    dims = inputs[0].shape
    if dims and all(isinstance(d, int) and d > 0 for d in dims):
        return tuple(dims)  # type: ignore[arg-type]
    return DEFAULT_PROBE if len(dims) == 4 else None


def inspect(path: Path, shape: str | None) -> dict[str, Any]:
    """The JSON-able report `info` prints."""
    from elan_deploy.export.graph_checks import CORE_ML_MAX_RANK, summarize, tensor_ranks

    model = _load(path)
    summary = summarize(model)
    probe = _probe_shape(summary.inputs, shape)
    if shape and len(summary.inputs) != 1:
        raise ElanDeployError(f"--shape needs a single-input model; '{path.name}' has {len(summary.inputs)} inputs")
    ranks = tensor_ranks(model, {summary.inputs[0].name: probe}) if probe else None
    return {
        "schema": "elan-deploy/info/1",  # first: marks a saved report as this tool's (elan_deploy.provenance)
        "path": str(path),
        "node_count": summary.node_count,
        "opsets": summary.opsets,
        "ir_version": summary.ir_version,
        "producer": summary.producer,
        "inputs": [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape)} for t in summary.inputs],
        "outputs": [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape)} for t in summary.outputs],
        "metadata": summary.metadata,
        "op_counts": summary.op_counts,
        "default_domain_only": summary.default_domain_only,
        "non_default_ops": list(summary.non_default_ops),
        "rank_check": None if ranks is None else {
            "input_shape": list(probe or ()),
            "max_rank": ranks.max_rank,
            "max_rank_tensors": list(ranks.max_rank_tensors),
            "unknown_rank_tensors": list(ranks.unknown),
            "within_limit": ranks.within(CORE_ML_MAX_RANK),
            "limit": CORE_ML_MAX_RANK,
        },
    }


def _shape_text(shape: list) -> str:
    return "x".join("?" if d is None else str(d) for d in shape)


def print_report(report: dict[str, Any]) -> None:
    print_table(
        f"{Path(report['path']).name}",
        ("field", "value"),
        [
            ("nodes", report["node_count"]),
            ("opsets", ", ".join(f"{d} {v}" for d, v in report["opsets"].items())),
            ("IR version", report["ir_version"]),
            ("producer", report["producer"]),
        ],
    )
    print_table(
        "inputs and outputs", ("name", "kind", "dtype", "shape"),
        [(t["name"], "input", t["dtype"], _shape_text(t["shape"])) for t in report["inputs"]]
        + [(t["name"], "output", t["dtype"], _shape_text(t["shape"])) for t in report["outputs"]],
    )
    if report["metadata"]:
        print_table("metadata", ("key", "value"), sorted(report["metadata"].items()))
    print_table("ops", ("op", "count"), list(report["op_counts"].items()))
    checks: list[tuple[str, str]] = [
        ("default-domain ops only", "yes" if report["default_domain_only"] else "no: " + ", ".join(report["non_default_ops"])),
    ]
    rank = report["rank_check"]
    if rank is None:
        checks.append(("max tensor rank", "not checked (pass --shape)"))
    else:
        value = f"{rank['max_rank']} at {_shape_text(rank['input_shape'])}"
        if rank["unknown_rank_tensors"]:
            value += f" ({len(rank['unknown_rank_tensors'])} tensors of unknown rank)"
        verdict = "yes" if rank["within_limit"] else "no"
        checks += [("max tensor rank", value), (f"all tensors rank ≤ {rank['limit']} (Core ML)", verdict)]
    print_table("checks", ("check", "result"), checks)


def run_info(args: argparse.Namespace) -> int:
    from elan_deploy.provenance import write_document
    from elan_deploy.provenance import check_output_file

    if args.json not in (None, "-"):
        if Path(args.json).resolve() == Path(args.onnx).resolve():
            raise ElanDeployError(f"--json '{args.json}' is the ONNX file being inspected; choose another path")
        check_output_file(args.json, "--json", args.overwrite)
    report = inspect(args.onnx, args.shape)
    if args.json == "-":
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return 0
    print_report(report)
    if args.json:
        write_document(args.json, report)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="ops, inputs/outputs, metadata and rank/domain checks of an ONNX file")
    p.add_argument("onnx", type=Path, help="ONNX file")
    p.add_argument("--shape", help="input shape for the rank check, e.g. 1x3x192x320 [the input's static shape, else 1x3x192x320]")
    p.add_argument("--json", nargs="?", const="-", metavar="PATH", help="print JSON instead of tables, or write it to PATH")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file even if this tool did not write it")
    p.set_defaults(handler=run_info)
