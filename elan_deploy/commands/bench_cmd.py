"""`elan-deploy bench`: the main job — export, build and benchmark every runtime × precision.

Every flag is checked before any work starts and the output folder is created only when there is
something to write, so a mistyped command costs nothing and leaves nothing behind. The default
plan adapts to the CPU (`bench.matrix.plan_for_cpu`) and `--time-limit` bounds the whole run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import time
from pathlib import Path

from elan_deploy.bench.allocator import ALLOCATORS
from elan_deploy.bench.compare import best_cell, headline_reference
from elan_deploy.bench.latency import LatencyConfig
from elan_deploy.bench.matrix import build_matrix, plan_for_cpu, row_label, unavailable_reason
from elan_deploy.bench.figures import CropSample, crop_engines
from elan_deploy.bench.report import summary_rows, unsteady_machine_warning, write_crop_figure, write_report, write_scatter
from elan_deploy.bench.runner import BenchConfig, BenchRunner
from elan_deploy.commands.compare_cmd import print_comparison, read_results
from elan_deploy.commands.common import add_model_args, check_onnx_matches, positive_int, scratch_dir
from elan_deploy.console import fmt, interactive, print_table, progress, quiet_library_progress, stderr, stdout
from elan_deploy.cpu import cpu_caps
from elan_deploy.datasets import load_dataset
from elan_deploy.errors import ElanDeployError, WorkFailed
from elan_deploy.fileio import write_json_atomic
from elan_deploy.model import load_model
from elan_deploy.results import results_document
from elan_deploy.runtimes import RUNTIME_NAMES, EngineCache, Precision
from elan_deploy.runtimes.cache import default_cache_dir

_LR_SHAPE = re.compile(r"^(\d+)x3x(\d+)x(\d+)$")


def parse_lr_shape(text: str) -> tuple[int, int, int, int]:
    m = _LR_SHAPE.match(text.strip().lower())
    if not m or min(int(v) for v in m.groups()) < 1:
        raise ElanDeployError(f"bad shape '{text}'; write Nx3xHxW, e.g. 1x3x180x320")
    n, h, w = (int(v) for v in m.groups())
    return (n, 3, h, w)


def _split(values: list[str] | None) -> list[str] | None:
    return [v for item in values for v in item.split(",") if v] if values else None


OUTPUT_FILES = ("results.json", "report.md", "latency_vs_psnr.png", "crops.png")


def _check_output(out: Path, overwrite: bool = False) -> None:
    """--output must be a folder we can create or write into, holding no file of ours-to-be that this
    tool did not write (unless --overwrite); checked up front, created only at the first write."""
    from elan_deploy.provenance import check_output_file

    if out.exists() and not out.is_dir():
        raise ElanDeployError(f"--output '{out}' is a file; choose a folder")
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ElanDeployError(f"cannot write into '{existing}' to create --output '{out}'; choose a writable --output")
    if out.is_dir():
        for name in OUTPUT_FILES:
            check_output_file(out / name, "--output file", overwrite)


def _check_names(values: list[str] | None, known: tuple[str, ...], flag: str) -> list[str] | None:
    for value in values or ():
        if value not in known:
            raise ElanDeployError(f"unknown {flag} '{value}'; choose from {', '.join(known)}")
    return values


def _nothing_can_run(cells, runner: BenchRunner) -> str | None:
    """When every cell the user asked for is unavailable here: the reasons, for one error line."""
    asked = [c for c in cells if not runner.config.reference_added or (c.runtime, c.precision) != ("torch", "fp32")]
    reasons = {c.label: runner.skip_reason(c, timed=False) for c in asked}
    if asked and all(reasons.values()):
        return "; ".join(sorted({f"{label}: {reason}" for label, reason in reasons.items()}))
    return None


def _plan_line(cells, runner: BenchRunner, cpu: str, time_limit: float | None) -> str:
    """One line saying what will run on this CPU and what is left out, before the work starts."""
    unavailable = sorted({c.runtime for c in cells if unavailable_reason(c)})
    planned = [c.label for c in cells if c in runner.config.planned and not unavailable_reason(c)]
    runs = sum(1 for c in cells if not runner.skip_reason(c, timed=False))
    parts = [f"plan for {cpu}: {runs} of {len(cells)} cells run"]
    if planned:
        parts.append(f"left out on this CPU: {', '.join(planned)}")
    if unavailable:
        parts.append(f"not available here: {', '.join(unavailable)}")
    if time_limit:
        parts.append(f"time limit {time_limit:g} s")
    return "; ".join(parts) + (" (reasons in the report)" if planned or unavailable else "")


def run_bench(args: argparse.Namespace) -> int:
    started = time.monotonic()
    # Everything the flags name is checked here, before any work and before any folder is created.
    baseline = read_results(args.compare, "--compare") if args.compare else None
    out: Path = args.output
    _check_output(out, args.overwrite)
    if min(args.rounds, args.iters, args.max_iters) < 1 or args.warmup < 0:
        raise ElanDeployError("--rounds, --iters and --max-iters must be at least 1 and --warmup at least 0")
    if args.rounds > max(args.iters, args.max_iters):
        raise ElanDeployError(f"--rounds {args.rounds} exceeds --max-iters; every round times at least one run")
    if args.time_budget < 0:
        raise ElanDeployError(f"--time-budget must be 0 or more seconds, got {args.time_budget:g}")
    if args.time_limit is not None and args.time_limit <= 0:
        raise ElanDeployError(f"--time-limit must be a positive number of seconds, got {args.time_limit:g}")
    runtimes = _check_names(_split(args.runtime), RUNTIME_NAMES, "--runtime")
    precisions = _check_names(_split(args.precision), tuple(p.value for p in Precision), "--precision")
    shapes = [parse_lr_shape(s) for s in (_split(args.shapes) or (["1x3x64x64"] if args.quick else ["1x3x180x320", "1x3x64x64"]))]
    names = _split(args.dataset) or ["Set5"]
    loaded = load_model(args.model, args.scale)
    if args.onnx is not None:
        check_onnx_matches(args.onnx, loaded.config.scale)
    latency = LatencyConfig(
        warmup=args.warmup, min_iters=args.iters, max_iters=max(args.iters, args.max_iters),
        time_budget_s=args.time_budget, rounds=args.rounds,
    )
    if args.quick:
        latency = LatencyConfig(warmup=1, min_iters=2, max_iters=3, time_budget_s=1.0, rounds=1)
    datasets = [load_dataset(name, loaded.config.scale, args.data_root) for name in names]
    cells = build_matrix(runtimes, precisions, strategies=args.strategies == "all")
    if not cells:
        raise ElanDeployError("the --runtime/--precision filters select no cell; see `elan-deploy bench --help`")
    reference_added = not any((c.runtime, c.precision) == ("torch", "fp32") for c in cells)
    if reference_added:
        cells = build_matrix(["torch"], ["fp32"]) + cells  # the fidelity reference always runs
    caps = cpu_caps()
    cache_dir = scratch_dir() / "engines" if args.no_cache else args.cache_dir or default_cache_dir()
    config = BenchConfig(
        shapes=shapes, datasets=datasets, latency=latency, threads=args.threads or os.cpu_count(), quick=args.quick,
        work_dir=out, onnx=args.onnx, cache=EngineCache(cache_dir), allocator=args.allocator,
        planned=plan_for_cpu(cells, precisions, caps), asked_precisions=precisions or [],
        deadline=started + args.time_limit if args.time_limit else None, time_limit_s=args.time_limit,
        reference_added=reference_added, guard=not args.no_guard,
    )
    runner = BenchRunner(loaded, config)
    if why := _nothing_can_run(cells, runner):
        raise WorkFailed(f"nothing it asked for can run here: {why}")
    stderr.print(_plan_line(cells, runner, caps.describe(), args.time_limit), markup=False)
    # In a log, NNCF's own bars would stand where our lines say which engine is being built.
    with quiet_library_progress() if not interactive() else contextlib.nullcontext(), progress() as bar:
        task = bar.add_task("bench", total=runner.steps(cells))
        runner.on_step = lambda message: bar.update(task, description=message)
        runner.on_advance = lambda: bar.advance(task)
        results = runner.run(cells)
    doc = results_document([row for r in results for row in r.rows])
    doc["command"] = "elan-deploy " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("elan-deploy") else "elan-deploy bench"
    if caps.overridden:
        doc["machine"]["isa_assumed"] = caps.isa  # what the plan was made for ($ELAN_DEPLOY_CPU_FLAGS)
    main_shape = "x".join(map(str, shapes[0]))
    if reference := headline_reference(doc, main_shape):
        doc["headline_reference"] = reference
    if best := best_cell(doc, main_shape, datasets[0].name):
        doc["best_cell"] = best
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "results.json", doc)
    headline = datasets[0].name
    write_report(doc, out / "report.md", main_shape, headline)
    plot_note = write_scatter(doc, out / "latency_vs_psnr.png", main_shape, headline)
    crop_note = _write_crops(results, runner.scale, datasets[0], out / "crops.png", crop_engines(doc, main_shape, headline))
    _record_outputs(out, written=[name for name, note in (("report.md", None), ("latency_vs_psnr.png", plot_note), ("crops.png", crop_note)) if not note])
    _print_summary(doc, main_shape, headline)
    if plot_note:
        stderr.print(f"plot skipped: {plot_note}", markup=False)
    if crop_note:
        stderr.print(f"crops skipped: {crop_note}", markup=False)
    if warning := unsteady_machine_warning(doc):
        stderr.print(warning, markup=False)
    stderr.print(f"wrote {out / 'results.json'}, {out / 'report.md'}, plots in {out}")
    return print_comparison(baseline, doc, str(args.compare)) if baseline is not None else 0


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


def _record_outputs(out: Path, written: list[str]) -> None:
    """A record beside each file whose format has no marker, so that a rerun knows it as this tool's."""
    from elan_deploy.provenance import record_file

    for name in written:
        record_file(out / name)


def _write_crops(results, scale: int, dataset, path: Path, engines: list[str]) -> str | None:
    """bicubic / torch FP32 / the engines worth deploying / HR, on the patch of the dataset where they
    tell most, with each engine's amplified difference from FP32; returns why not drawn, if so."""
    outputs = {r.cell.label: r.outputs[dataset.name] for r in results if len(r.outputs.get(dataset.name, ())) == len(dataset)}
    samples = [
        CropSample(s.name, s.hr, {label: images[i] for label, images in outputs.items()}, lr=s.lr) for i, s in enumerate(dataset)
    ]
    return write_crop_figure(samples, path, scale, engines)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="export, build and benchmark every runtime × precision (the main job)")
    add_model_args(p)
    p.add_argument("--runtime", action="append", help="only these runtimes (repeatable or comma-separated)")
    p.add_argument("--precision", action="append",
                   help="only these precisions (repeatable or comma-separated); a precision named here runs even where this CPU only emulates it")
    p.add_argument("--strategies", choices=("default", "all"), default="default", help="also compare every export strategy on ONNX Runtime/OpenVINO fp32")
    p.add_argument("--shapes", action="append", help="LR input shapes Nx3xHxW, first is the headline [1x3x180x320,1x3x64x64]")
    p.add_argument("--dataset", action="append", help="quality datasets: Set5, Set14, B100 or folders [Set5]")
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
    p.add_argument("--cache-dir", type=Path, help="engine cache folder")
    p.add_argument("--no-cache", action="store_true", help="ignore the cache: build every engine into a scratch folder removed on exit")
    p.set_defaults(handler=run_bench)
