"""`elan-deploy bench`: the main job — export, build and benchmark every runtime × precision.

Every flag is checked before any work starts and the output folder is created only when there is
something to write, so a mistyped command costs nothing and leaves nothing behind. The default
plan adapts to the CPU (`bench.matrix.plan_for_cpu`) and `--time-limit` bounds the whole run.
The run itself, from the plan to the written files, is `bench.run`.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import time
from pathlib import Path

from elan_deploy.bench.allocator import ALLOCATORS
from elan_deploy.bench.latency import LatencyConfig
from elan_deploy.bench.matrix import row_label
from elan_deploy.bench.report import summary_rows
from elan_deploy.bench.run import BenchRun, BenchSettings, check_output_folder, plan_bench
from elan_deploy.bench.run import run_bench as run_plan
from elan_deploy.commands.common import add_model_args, cache_root_from_args, check_onnx_matches, positive_int
from elan_deploy.commands.comparison import print_comparison, read_results
from elan_deploy.console import fmt, interactive, print_table, progress, quiet_library_progress, stderr, stdout
from elan_deploy.errors import ElanDeployError
from elan_deploy.model import load_model
from elan_deploy.runtimes import RUNTIME_NAMES, Precision

_LR_SHAPE = re.compile(r"^(\d+)x3x(\d+)x(\d+)$")


def parse_lr_shape(text: str) -> tuple[int, int, int, int]:
    m = _LR_SHAPE.match(text.strip().lower())
    if not m or min(int(v) for v in m.groups()) < 1:
        raise ElanDeployError(f"bad shape '{text}'; write Nx3xHxW, e.g. 1x3x180x320")
    n, h, w = (int(v) for v in m.groups())
    return (n, 3, h, w)


def _split(values: list[str] | None) -> list[str] | None:
    return [v for item in values for v in item.split(",") if v] if values else None


def _check_names(values: list[str] | None, known: tuple[str, ...], flag: str) -> list[str] | None:
    for value in values or ():
        if value not in known:
            raise ElanDeployError(f"unknown {flag} '{value}'; choose from {', '.join(known)}")
    return values


def _check_numbers(args: argparse.Namespace) -> None:
    if min(args.rounds, args.iters, args.max_iters) < 1 or args.warmup < 0:
        raise ElanDeployError("--rounds, --iters and --max-iters must be at least 1 and --warmup at least 0")
    if args.rounds > max(args.iters, args.max_iters):
        raise ElanDeployError(f"--rounds {args.rounds} exceeds --max-iters; every round times at least one run")
    if args.time_budget < 0:
        raise ElanDeployError(f"--time-budget must be 0 or more seconds, got {args.time_budget:g}")
    if args.time_limit is not None and args.time_limit <= 0:
        raise ElanDeployError(f"--time-limit must be a positive number of seconds, got {args.time_limit:g}")


def _settings(args: argparse.Namespace, started: float) -> BenchSettings:
    """Every flag checked, before any work and before any folder is created."""
    check_output_folder(args.output, args.overwrite)
    _check_numbers(args)
    runtimes = _check_names(_split(args.runtime), RUNTIME_NAMES, "--runtime")
    precisions = _check_names(_split(args.precision), tuple(p.value for p in Precision), "--precision")
    shapes = [parse_lr_shape(s) for s in (_split(args.shapes) or (["1x3x64x64"] if args.quick else ["1x3x180x320", "1x3x64x64"]))]
    latency = LatencyConfig(
        warmup=args.warmup, min_iters=args.iters, max_iters=max(args.iters, args.max_iters),
        time_budget_s=args.time_budget, rounds=args.rounds,
    )
    if args.quick:
        latency = LatencyConfig(warmup=1, min_iters=2, max_iters=3, time_budget_s=1.0, rounds=1)
    return BenchSettings(
        output=args.output, shapes=shapes, datasets=_split(args.dataset) or ["Set5", "stress"], latency=latency, started=started,
        cache_root=lambda: cache_root_from_args(args), runtimes=runtimes, precisions=precisions, data_root=args.data_root,
        threads=args.threads, quick=args.quick, onnx=args.onnx, allocator=args.allocator, strategies=args.strategies == "all",
        time_limit_s=args.time_limit, guard=not args.no_guard,
        command="elan-deploy " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("elan-deploy") else "elan-deploy bench",
    )


def run_bench(args: argparse.Namespace) -> int:
    started = time.monotonic()
    baseline = read_results(args.compare, "--compare") if args.compare else None
    settings = _settings(args, started)
    loaded = load_model(args.model, args.scale)
    if args.onnx is not None:
        check_onnx_matches(args.onnx, loaded.config.scale)
    plan = plan_bench(loaded, settings)
    stderr.print(plan.line(), markup=False)
    # In a log, NNCF's own bars would stand where our lines say which engine is being built.
    with quiet_library_progress() if not interactive() else contextlib.nullcontext(), progress() as bar:
        task = bar.add_task("bench", total=plan.steps)
        run = run_plan(plan, on_step=lambda message: bar.update(task, description=message), on_advance=lambda: bar.advance(task))
    _print_run(run)
    return print_comparison(baseline, run.doc, str(args.compare)) if baseline is not None else 0


def _print_run(run: BenchRun) -> None:
    _print_summary(run.doc, run.main_shape, run.headline)
    if run.plot_note:
        stderr.print(f"plot skipped: {run.plot_note}", markup=False)
    if run.crop_note:
        stderr.print(f"crops skipped: {run.crop_note}", markup=False)
    if warning := run.warning:
        stderr.print(warning, markup=False)
    stderr.print(f"wrote {run.output / 'results.json'}, {run.output / 'report.md'}, plots in {run.output}")


def _print_summary(doc: dict, main_shape: str, dataset: str) -> None:
    rows = summary_rows(doc, main_shape, dataset)
    reference = doc.get("headline_reference")
    ref_p50 = reference["p50_ms"] if reference else None
    print_table(
        f"{doc['rows'][0]['model']}: latency at {main_shape}, quality on {dataset}",
        ("cell", "used", "p50 ms", "p90 ms", "vs eager", f"vs {reference['cell'] if reference else 'torch-compile'}", "PSNR", "Δ dB", "fidelity"),
        [(s["cell"], s["used"] or "–", fmt(s["p50_ms"], 1), fmt(s["p90_ms"], 1), fmt(s["speedup_vs_eager"], 2, "×"),
          fmt(ref_p50 / s["p50_ms"] if ref_p50 and s["p50_ms"] else None, 2, "×"), fmt(s["psnr"], 4), fmt(s["delta_db"], 4),
          fmt(s["fidelity_psnr"], 2))
         for s in rows],
    )
    if best := doc.get("best_cell"):
        versus = f", {best['speedup_vs_reference']:.2f}x {best['reference']}" if best.get("speedup_vs_reference") else ""
        stdout.print(f"fastest within {best['budget_db']} dB of torch fp32 on {dataset}: {best['cell']} "
                     f"({best['precision_used']}, p50 {best['p50_ms']:.1f} ms{versus}, {best['delta_db']:+.4f} dB)", markup=False)
    skipped = [r for r in doc["rows"] if r.get("kind") in ("skipped", "failed")]
    if skipped:
        print_table(
            "not run here", ("cell", "shape", "status", "reason"),
            [(row_label(r), r.get("shape", "all"), r["kind"], r["reason"]) for r in skipped],
        )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="export, build and benchmark every runtime × precision (the main job)")
    add_model_args(p)
    p.add_argument("--runtime", action="append", help="only these runtimes (repeatable or comma-separated)")
    p.add_argument("--precision", action="append",
                   help="only these precisions (repeatable or comma-separated); a precision named here runs even where this CPU only emulates it")
    p.add_argument("--strategies", choices=("default", "all"), default="default", help="also compare every export strategy on ONNX Runtime/OpenVINO fp32")
    p.add_argument("--shapes", action="append", help="LR input shapes Nx3xHxW, first is the headline [1x3x180x320,1x3x64x64]")
    p.add_argument("--dataset", action="append", help="quality datasets: Set5, Set14, B100, folders, and `stress` (text, UI, QR... generated in code) [Set5 stress]")
    p.add_argument("--data-root", type=Path, help="folder holding Set5/, Set14/, B100/")
    p.add_argument("--warmup", type=int, default=1, help="warm-up runs per shape [1]")
    p.add_argument("--iters", type=int, default=5, help="minimum timed runs per shape [5]")
    p.add_argument("--max-iters", type=int, default=50, help="maximum timed runs per shape [50]")
    p.add_argument("--time-budget", type=float, default=10.0, help="keep timing until this many seconds have passed [10]")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds that share the iterations and time budget [5]")
    p.add_argument("--threads", type=positive_int, help="threads for every runtime [all cores]")
    p.add_argument("--allocator", choices=ALLOCATORS, default="keep",
                   help="malloc in the latency workers: keep freed memory, as tcmalloc/jemalloc would, or the system default [keep]")
    p.add_argument("--time-limit", type=float, metavar="SECONDS",
                   help="bound the whole run: no step starts after this many seconds; cells not reached are listed as skipped [no limit]")
    p.add_argument("--quick", action="store_true", help="smoke run: 1x3x64x64, few iterations, skips torch.compile and int8")
    p.add_argument("--output", type=Path, default=Path("bench-out"), help="folder for results.json, report.md and plots [bench-out]")
    p.add_argument("--overwrite", action="store_true", help="replace results.json, report.md and the plots in --output even if this tool did not write them")
    p.add_argument("--compare", type=Path, help="earlier results.json: flag regressions (exit 1 if any)")
    p.add_argument("--onnx", type=Path, help="exported FP32 ONNX for the default-strategy cells [export the model]")
    p.add_argument("--cache-dir", type=Path, help="cache folder; engines go to its engines/ [$ELAN_DEPLOY_CACHE or ~/.cache/elan-deploy]")
    p.add_argument("--no-cache", action="store_true", help="ignore the cache: build every engine into a scratch folder removed on exit")
    p.set_defaults(handler=run_bench)
