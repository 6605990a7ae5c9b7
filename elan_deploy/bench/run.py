"""One benchmark run from the settings to the files: plan the cells, run them, write the documents.

`plan_bench` turns the settings into cells and a runner for this CPU, and refuses a run in which
nothing that was asked for can run here, before any engine is built or any folder created.
`run_bench` runs the plan and writes results.json, report.md and the two pictures into the output
folder, which is created only then, so a refused or mistyped run leaves nothing behind.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from elan_deploy.bench.allocator import Allocator
from elan_deploy.bench.compare import best_cell, headline_reference
from elan_deploy.bench.default_engine import LAST_RESULTS
from elan_deploy.bench.figures import CropSample, crop_engines
from elan_deploy.bench.latency import LatencyConfig
from elan_deploy.bench.matrix import Cell, build_matrix, plan_for_cpu, unavailable_reason
from elan_deploy.bench.report import unsteady_machine_warning, write_crop_figure, write_report, write_scatter
from elan_deploy.bench.runner import BenchConfig, BenchRunner, CellResult
from elan_deploy.bench.stress_rows import STRESS_DATASET, StressSet, guarded_reference
from elan_deploy.cpu import CpuCaps, cpu_caps
from elan_deploy.datasets import SRDataset, load_dataset
from elan_deploy.errors import ElanDeployError, WorkFailed
from elan_deploy.provenance import write_document
from elan_deploy.model.checkpoint import LoadedCheckpoint
from elan_deploy.results import results_document

OUTPUT_FILES = ("results.json", "report.md", "latency_vs_psnr.png", "crops.png")


def check_output_folder(out: Path, overwrite: bool = False) -> None:
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


@dataclass
class BenchSettings:
    """What one run measures and where it writes it, already checked as flags."""

    output: Path
    shapes: list[tuple[int, int, int, int]]  # LR input shapes; the first is the headline
    datasets: list[str]  # quality datasets by name or folder; the first is the headline
    latency: LatencyConfig
    started: float  # time.monotonic() when the command began: --time-limit counts from there
    cache_root: Callable[[], Path]  # called once the run is sure to start: a --no-cache scratch folder is made then
    runtimes: list[str] | None = None  # None: every runtime
    precisions: list[str] | None = None  # None: every precision; named ones run even where the CPU emulates them
    data_root: Path | None = None
    threads: int | None = None
    quick: bool = False
    onnx: Path | None = None
    allocator: Allocator = "keep"
    strategies: bool = False  # also every export strategy on the ONNX runtimes at fp32
    time_limit_s: float | None = None
    guard: bool = True
    command: str = "elan-deploy bench"  # what results.json says produced it


@dataclass
class BenchPlan:
    """The cells of a run and the runner that will measure them on this CPU."""

    settings: BenchSettings
    runner: BenchRunner
    cells: list[Cell]
    caps: CpuCaps

    @property
    def steps(self) -> int:
        return self.runner.steps(self.cells)

    def line(self) -> str:
        """One line saying what will run on this CPU and what is left out, before the work starts."""
        cells, config = self.cells, self.runner.config
        unavailable = sorted({c.runtime for c in cells if unavailable_reason(c)})
        planned = [c.label for c in cells if c in config.planned and not unavailable_reason(c)]
        runs = sum(1 for c in cells if not self.runner.skip_reason(c, timed=False))
        parts = [f"plan for {self.caps.describe()}: {runs} of {len(cells)} cells run"]
        if planned:
            parts.append(f"left out on this CPU: {', '.join(planned)}")
        if unavailable:
            parts.append(f"not available here: {', '.join(unavailable)}")
        if config.time_limit_s:
            parts.append(f"time limit {config.time_limit_s:g} s")
        return "; ".join(parts) + (" (reasons in the report)" if planned or unavailable else "")


def _nothing_can_run(cells: list[Cell], runner: BenchRunner) -> str | None:
    """When every cell the user asked for is unavailable here: the reasons, for one error line."""
    asked = [c for c in cells if not runner.config.reference_added or (c.runtime, c.precision) != ("torch", "fp32")]
    reasons = {c.label: runner.skip_reason(c, timed=False) for c in asked}
    if asked and all(reasons.values()):
        return "; ".join(sorted({f"{label}: {reason}" for label, reason in reasons.items()}))
    return None


def plan_bench(loaded: LoadedCheckpoint, settings: BenchSettings) -> BenchPlan:
    """The datasets, the cells (torch fp32 always among them, as the fidelity reference) and the CPU's plan."""
    names = [name for name in settings.datasets if name != STRESS_DATASET]
    if not names:
        raise ElanDeployError(f"--dataset {STRESS_DATASET} goes beside a benchmark set: add --dataset Set5 (or Set14, B100, a folder)")
    datasets = [load_dataset(name, loaded.config.scale, settings.data_root) for name in names]
    cells = build_matrix(settings.runtimes, settings.precisions, strategies=settings.strategies)
    if not cells:
        raise ElanDeployError("the --runtime/--precision filters select no cell; see `elan-deploy bench --help`")
    reference_added = not any((c.runtime, c.precision) == ("torch", "fp32") for c in cells)
    if reference_added:
        cells = build_matrix(["torch"], ["fp32"]) + cells
    caps = cpu_caps()
    limit, threads, stressed = settings.time_limit_s, settings.threads or os.cpu_count(), STRESS_DATASET in settings.datasets
    root = settings.cache_root()
    config = BenchConfig(
        shapes=settings.shapes, datasets=datasets, latency=settings.latency, threads=threads,
        quick=settings.quick, work_dir=settings.output, onnx=settings.onnx, cache_root=root,
        allocator=settings.allocator, planned=plan_for_cpu(cells, settings.precisions, caps),
        asked_precisions=settings.precisions or [], deadline=settings.started + limit if limit else None,
        time_limit_s=limit, reference_added=reference_added, guard=settings.guard,
        stress=StressSet(loaded.config.scale, guarded_reference(loaded, threads, root)) if stressed else None,
    )
    runner = BenchRunner(loaded, config)
    if why := _nothing_can_run(cells, runner):
        raise WorkFailed(f"nothing it asked for can run here: {why}")
    return BenchPlan(settings, runner, cells, caps)


@dataclass
class BenchRun:
    """A finished run: its results document, where it was written, and why a picture was not drawn."""

    doc: dict[str, Any]
    results: list[CellResult]
    output: Path
    main_shape: str  # the headline latency shape, "NxCxHxW"
    headline: str  # the headline quality dataset
    plot_note: str | None = None
    crop_note: str | None = None

    @property
    def warning(self) -> str | None:
        return unsteady_machine_warning(self.doc)


def bench_document(plan: BenchPlan, results: list[CellResult], main_shape: str, headline: str) -> dict[str, Any]:
    """results.json: every row, the command, the ISA the plan assumed if overridden, and the headline cells."""
    doc = results_document([row for r in results for row in r.rows])
    doc["command"] = plan.settings.command
    if plan.caps.overridden:
        doc["machine"]["isa_assumed"] = plan.caps.isa  # what the plan was made for ($ELAN_DEPLOY_CPU_FLAGS)
    if reference := headline_reference(doc, main_shape):
        doc["headline_reference"] = reference
    if best := best_cell(doc, main_shape, headline):
        doc["best_cell"] = best
    return doc


def run_bench(
    plan: BenchPlan, on_step: Callable[[str], None] | None = None, on_advance: Callable[[], None] | None = None,
) -> BenchRun:
    """Run every cell of the plan and write its documents into the output folder; `on_step` hears
    "<cell>: <phase>" as each step starts and `on_advance` each step done, for a progress display."""
    runner = plan.runner
    if on_step is not None:
        runner.on_step = on_step
    if on_advance is not None:
        runner.on_advance = on_advance
    results = runner.run(plan.cells)
    main_shape = "x".join(map(str, plan.settings.shapes[0]))
    headline = runner.config.datasets[0]
    run = BenchRun(bench_document(plan, results, main_shape, headline.name), results, plan.settings.output, main_shape, headline.name)
    write_bench_files(run, runner.scale, headline, runner.config.cache_root)
    return run


def write_bench_files(run: BenchRun, scale: int, headline: SRDataset, cache_root: Path) -> None:
    """results.json, report.md and the two pictures; a picture that cannot be drawn leaves its note in `run`."""
    from elan_deploy.provenance import record_file

    out = run.output
    out.mkdir(parents=True, exist_ok=True)
    write_document(out / "results.json", run.doc)
    (cache_root / LAST_RESULTS).parent.mkdir(parents=True, exist_ok=True)
    write_document(cache_root / LAST_RESULTS, run.doc)  # `--runtime auto` picks from the user's own last run
    write_report(run.doc, out / "report.md", run.main_shape, run.headline)
    run.plot_note = write_scatter(run.doc, out / "latency_vs_psnr.png", run.main_shape, run.headline)
    engines = crop_engines(run.doc, run.main_shape, run.headline)
    run.crop_note = _write_crops(run.results, scale, headline, out / "crops.png", engines)
    # A record beside each file whose format has no marker, so that a rerun knows it as this tool's.
    for name, note in (("report.md", None), ("latency_vs_psnr.png", run.plot_note), ("crops.png", run.crop_note)):
        if not note:
            record_file(out / name)


def _write_crops(results: list[CellResult], scale: int, dataset: SRDataset, path: Path, engines: list[str]) -> str | None:
    """bicubic / torch FP32 / the engines worth deploying / HR, on the patch of the dataset where they
    tell most, with each engine's amplified difference from FP32; returns why not drawn, if so."""
    outputs = {r.cell.label: r.outputs[dataset.name] for r in results if len(r.outputs.get(dataset.name, ())) == len(dataset)}
    samples = [
        CropSample(s.name, s.hr, {label: images[i] for label, images in outputs.items()}, lr=s.lr) for i, s in enumerate(dataset)
    ]
    return write_crop_figure(samples, path, scale, engines)
