"""`elan-deploy bench`: the main job — export, build and benchmark every runtime × precision."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from elan_deploy.bench.allocator import ALLOCATORS
from elan_deploy.bench.latency import LatencyConfig
from elan_deploy.bench.matrix import build_matrix, row_label
from elan_deploy.bench.report import summary_rows, unsteady_machine_warning, write_crops, write_report, write_scatter
from elan_deploy.bench.runner import BenchConfig, BenchRunner
from elan_deploy.commands.compare_cmd import print_comparison, read_results
from elan_deploy.commands.common import add_model_args, check_onnx_matches, scratch_dir
from elan_deploy.console import fmt, print_table, progress, stderr
from elan_deploy.datasets import load_dataset
from elan_deploy.errors import ElanDeployError
from elan_deploy.fileio import write_json_atomic
from elan_deploy.imaging import imresize, to_uint8
from elan_deploy.model import load_model
from elan_deploy.results import results_document
from elan_deploy.runtimes import EngineCache
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


def run_bench(args: argparse.Namespace) -> int:
    baseline = read_results(args.compare, "--compare") if args.compare else None  # a bad file fails before anything is written or run
    out: Path = args.output
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ElanDeployError(f"cannot create output folder '{out}' ({exc.strerror}); choose a writable --output") from None
    loaded = load_model(args.model, args.scale)
    if args.onnx is not None:
        check_onnx_matches(args.onnx, loaded.config.scale)
    names = _split(args.dataset) or ["Set5"]
    shapes = [parse_lr_shape(s) for s in (_split(args.shapes) or (["1x3x64x64"] if args.quick else ["1x3x180x320", "1x3x64x64"]))]
    if min(args.rounds, args.iters, args.max_iters) < 1 or args.warmup < 0:
        raise ElanDeployError("--rounds, --iters and --max-iters must be at least 1 and --warmup at least 0")
    if args.rounds > max(args.iters, args.max_iters):
        raise ElanDeployError(f"--rounds {args.rounds} exceeds --max-iters; every round times at least one run")
    latency = LatencyConfig(
        warmup=args.warmup, min_iters=args.iters, max_iters=max(args.iters, args.max_iters),
        time_budget_s=args.time_budget, rounds=args.rounds,
    )
    if args.quick:
        latency = LatencyConfig(warmup=1, min_iters=2, max_iters=3, time_budget_s=1.0, rounds=1)
    datasets = [load_dataset(name, loaded.config.scale, args.data_root) for name in names]
    cells = build_matrix(_split(args.runtime), _split(args.precision), strategies=args.strategies == "all")
    if not cells:
        raise ElanDeployError("the --runtime/--precision filters select no cell; see `elan-deploy bench --help`")
    if not any((c.runtime, c.precision) == ("torch", "fp32") for c in cells):
        cells = build_matrix(["torch"], ["fp32"]) + cells  # the fidelity reference always runs
    cache_dir = scratch_dir() / "engines" if args.no_cache else args.cache_dir or default_cache_dir()
    config = BenchConfig(
        shapes=shapes, datasets=datasets, latency=latency, threads=args.threads or os.cpu_count(), quick=args.quick,
        work_dir=out, onnx=args.onnx, cache=EngineCache(cache_dir), allocator=args.allocator,
    )
    with progress() as bar:
        runner = BenchRunner(loaded, config)
        task = bar.add_task("bench", total=runner.steps(cells))
        runner.on_step = lambda message: bar.update(task, description=message)
        runner.on_advance = lambda: bar.advance(task)
        results = runner.run(cells)
    doc = results_document([row for r in results for row in r.rows])
    doc["command"] = "elan-deploy " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("elan-deploy") else "elan-deploy bench"
    main_shape = "x".join(map(str, shapes[0]))
    write_json_atomic(out / "results.json", doc)
    headline = datasets[0].name
    write_report(doc, out / "report.md", main_shape, headline)
    plot_note = write_scatter(doc, out / "latency_vs_psnr.png", main_shape, headline)
    _write_crops(results, runner, datasets[0], out / "crops.png")
    _print_summary(doc, main_shape, headline)
    if plot_note:
        stderr.print(f"plot skipped: {plot_note}", markup=False)
    if warning := unsteady_machine_warning(doc):
        stderr.print(warning, markup=False)
    stderr.print(f"wrote {out / 'results.json'}, {out / 'report.md'}, plots in {out}")
    return print_comparison(baseline, doc, str(args.compare)) if baseline is not None else 0


def _print_summary(doc: dict, main_shape: str, dataset: str) -> None:
    rows = summary_rows(doc, main_shape, dataset)
    print_table(
        f"{doc['rows'][0]['model']}: latency at {main_shape}, quality on {dataset}",
        ("cell", "used", "p50 ms", "p90 ms", "vs eager", "vs compile bf16", "PSNR", "Δ dB", "fidelity"),
        [(s["cell"], s["used"] or "–", fmt(s["p50_ms"], 1), fmt(s["p90_ms"], 1), fmt(s["speedup_vs_eager"], 2, "×"),
          fmt(s["speedup_vs_compile_bf16"], 2, "×"), fmt(s["psnr"], 4), fmt(s["delta_db"], 4), fmt(s["fidelity_psnr"], 2))
         for s in rows],
    )
    skipped = [r for r in doc["rows"] if r.get("kind") in ("skipped", "failed")]
    if skipped:
        print_table(
            "not run here", ("cell", "shape", "status", "reason"),
            [(row_label(r), r.get("shape", "all"), r["kind"], r["reason"]) for r in skipped],
        )


def _write_crops(results, runner: BenchRunner, dataset, path: Path) -> None:
    """bicubic / FP32 / best INT8 (or best non-FP32) / HR on the first image of the first dataset."""
    sample = next(iter(dataset))
    by_label = {r.cell.label: r for r in results if dataset.name in r.outputs}
    fp32 = by_label.get("torch fp32")
    if fp32 is None:
        return
    psnr_of = {r.cell.label: row.psnr for r in results for row in r.rows if row.extra.get("kind") == "quality" and row.dataset == dataset.name}
    int8 = [label for label in by_label if label.endswith("int8")]
    others = [label for label in by_label if label != "torch fp32"]
    best = max(int8 or others, key=lambda label: psnr_of.get(label) or 0.0, default=None)
    bicubic = to_uint8(imresize(sample.lr.astype("float32"), scale=runner.scale))
    panels = [("bicubic", bicubic), ("torch fp32", fp32.outputs[dataset.name][0])]
    if best:
        panels.append((best, by_label[best].outputs[dataset.name][0]))
    panels.append(("HR", sample.hr))
    h, w = sample.hr.shape[:2]
    size = min(96, h, w)
    write_crops(panels, path, ((h - size) // 2, (w - size) // 2, size))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="export, build and benchmark every runtime × precision (the main job)")
    add_model_args(p)
    p.add_argument("--runtime", action="append", help="only these runtimes (repeatable or comma-separated)")
    p.add_argument("--precision", action="append", help="only these precisions (repeatable or comma-separated)")
    p.add_argument("--strategies", choices=("default", "all"), default="default", help="also compare every export strategy on ONNX Runtime/OpenVINO fp32")
    p.add_argument("--shapes", action="append", help="LR input shapes Nx3xHxW, first is the headline [1x3x180x320,1x3x64x64]")
    p.add_argument("--dataset", action="append", help="quality datasets: Set5, Set14, B100 or folders [Set5]")
    p.add_argument("--data-root", type=Path, help="folder holding Set5/, Set14/, B100/")
    p.add_argument("--warmup", type=int, default=1, help="warm-up runs per shape [1]")
    p.add_argument("--iters", type=int, default=5, help="minimum timed runs per shape [5]")
    p.add_argument("--max-iters", type=int, default=50, help="maximum timed runs per shape [50]")
    p.add_argument("--time-budget", type=float, default=10.0, help="keep timing until this many seconds have passed [10]")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds that share the iterations and time budget [5]")
    p.add_argument("--threads", type=int, help="threads for every runtime [all cores]")
    p.add_argument("--allocator", choices=ALLOCATORS, default="keep",
                   help="malloc in the latency workers: keep freed memory, as tcmalloc/jemalloc would, or the system default [keep]")
    p.add_argument("--quick", action="store_true", help="smoke run: 1x3x64x64, few iterations, skips torch.compile and int8")
    p.add_argument("--output", type=Path, default=Path("bench-out"), help="folder for results.json, report.md and plots [bench-out]")
    p.add_argument("--compare", type=Path, help="earlier results.json: flag regressions (exit 1 if any)")
    p.add_argument("--onnx", type=Path, help="exported FP32 ONNX for the default-strategy cells [export the model]")
    p.add_argument("--cache-dir", type=Path, help="engine cache folder")
    p.add_argument("--no-cache", action="store_true", help="ignore the cache: build every engine into a scratch folder removed on exit")
    p.set_defaults(handler=run_bench)
