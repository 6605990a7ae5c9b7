"""Run the benchmark matrix: build each engine, measure quality and latency, collect rows.

Every cell goes through the same code: an engine from an `EngineLoader`, the `Upscaler` for whole
images, the paper's metrics for quality and the torch FP32 output as the fidelity reference.
Latency uses a static engine per shape, loaded in its own worker process (`bench.worker`) and
timed in rounds interleaved with every other engine's, on a natural input.

The plan (`BenchConfig.planned`) says which cells this CPU leaves out and why; a deadline
(`--time-limit`) is checked between steps, and cells not reached become skipped rows that say
so. Progress goes to `on_step` as "<cell>: <phase> ..." with the phases export, build,
calibration, quality and latency, so a plain log reads as what is happening.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from elan_deploy.bench.allocator import Allocator
from elan_deploy.bench.latency import CpuLoad, LatencyConfig, LatencyStats
from elan_deploy.bench.matrix import Cell, PlannedSkip, unavailable_reason
from elan_deploy.bench.stress_rows import STRESS_DATASET, StressSet, stress_fields
from elan_deploy.bench.worker import LatencyWorker, WorkerFailed, WorkerSpec
from elan_deploy.cpu import mem_available
from elan_deploy.datasets import SRDataset
from elan_deploy.errors import ElanDeployError
from elan_deploy.export.strategies import DEFAULT_WINDOWS
from elan_deploy.imaging import to_uint8
from elan_deploy.metrics import psnr, psnr_y, ssim_y
from elan_deploy.model.checkpoint import LoadedCheckpoint
from elan_deploy.results import ResultRow, RowKind
from elan_deploy.runtimes import DEFAULT_SHAPES, RUNTIMES_FROM_ONNX, EngineLoader, ModelSource, ShapeRange
from elan_deploy.upscale import Upscaler, round_up

SLOW_TO_PREPARE = {"torch-compile": "compiles for minutes per shape", "int8": "calibration and sensitivity search take minutes"}


@dataclass
class BenchConfig:
    shapes: list[tuple[int, int, int, int]] = field(default_factory=lambda: [(1, 3, 180, 320), (1, 3, 64, 64)])
    datasets: list[SRDataset] = field(default_factory=list)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    threads: int | None = None
    quick: bool = False
    work_dir: Path = Path("bench-out")
    cache_root: Path | None = None  # engines in its engines/ (None: $ELAN_DEPLOY_CACHE); workers load what the bench builds there
    onnx: Path | None = None  # an exported FP32 ONNX to use for the default-strategy cells
    allocator: Allocator = "keep"  # malloc in the latency workers, see `bench.allocator`
    planned: dict[Cell, PlannedSkip] = field(default_factory=dict)  # cells the default plan leaves out on this CPU
    asked_precisions: list[str] = field(default_factory=list)  # named by --precision: never marked duplicate
    deadline: float | None = None  # time.monotonic() after which no new step starts (--time-limit)
    time_limit_s: float | None = None
    reference_added: bool = False  # torch fp32 joined the plan as the fidelity reference, not by the user's filters
    guard: bool = True  # engine cells clamp to the T91 ranges (`--no-guard`: none does); the reference never does
    stress: StressSet | None = None  # `--dataset stress`: a stress row per cell after its datasets

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline


@dataclass
class CellResult:
    cell: Cell
    rows: list[ResultRow]
    outputs: dict[str, list[np.ndarray]] = field(default_factory=dict)  # dataset -> SR uint8 images


class BenchRunner:
    def __init__(
        self, loaded: LoadedCheckpoint, config: BenchConfig,
        on_step: Callable[[str], None] | None = None, on_advance: Callable[[], None] | None = None,
    ) -> None:
        self.loaded = loaded
        self.config = config
        self.on_step = on_step or (lambda message: None)
        self.on_advance = on_advance or (lambda: None)
        self.sources: dict[tuple[str, str], ModelSource] = {}
        self.reference: dict[str, list[np.ndarray]] = {}  # dataset -> torch fp32 float outputs
        self.reference_latency_out: dict[str, np.ndarray] = {}
        self._exported: set[tuple[str, str]] = set()  # export strategies whose ONNX exists

    @property
    def scale(self) -> int:
        return self.loaded.config.scale

    def guarded(self, cell: Cell) -> bool:
        """Every cell runs the range-guarded model, except the reference: the paper model, whose PSNR is the paper's."""
        return self.config.guard and not cell.is_reference

    def source(self, cell: Cell) -> ModelSource:
        key = (cell.shift, cell.attention, cell.windows, self.guarded(cell), cell.uses_export)
        if key not in self.sources:  # a given ONNX (and the guard in its metadata) is for the cells that run the export
            given = self.config.onnx if cell.uses_export and key[:3] == ("depthwise", "shared", DEFAULT_WINDOWS) else None
            self.sources[key] = ModelSource(
                self.loaded, shift=cell.shift, attention=cell.attention, windows=cell.windows, onnx=given,
                work_dir=self.config.work_dir / "onnx", guard=key[3],
            )
        return self.sources[key]

    def loader(self, cell: Cell, shapes: ShapeRange | None) -> EngineLoader:
        return EngineLoader(self.source(cell), cell.runtime, cell.precision, shapes, self.config.threads, self.config.cache_root)

    def _row(self, cell: Cell, engine, **fields) -> ResultRow:
        info = engine.info if engine is not None else None
        extra = {"kind": fields.pop("kind"), "guard": self.source(cell).guard_label}
        if cell.uses_export:
            extra.update(shift=cell.shift, attention=cell.attention, windows=cell.windows)
        extra.update(fields.pop("extra", {}))
        return ResultRow(
            model=self.loaded.config.model_id, runtime=cell.runtime, precision=cell.precision,
            dataset=fields.pop("dataset", None) or "-", images=fields.pop("images", 0),
            runtime_version=info.runtime_version if info else None,
            precision_used=info.precision_used if info else None,
            threads=info.threads if info else None, extra=extra, **fields,
        )

    def skip_reason(self, cell: Cell, phase: str = "quality", timed: bool = True) -> str | None:
        """Why a cell does not run: a missing runtime first (its install hint is what to act on), then
        the CPU plan, --quick, and the time limit."""
        if reason := unavailable_reason(cell):
            return reason
        if planned := self.config.planned.get(cell):
            return planned.reason
        if self.config.quick:
            for key, why in SLOW_TO_PREPARE.items():
                if key in (cell.runtime, cell.precision):
                    return f"--quick skips it ({why})"
        if timed and self.config.out_of_time():
            return f"--time-limit {self.config.time_limit_s:g} s reached before its {phase}"
        return None

    def steps(self, cells: list[Cell]) -> int:
        """Progress units of `run`: one quality step per cell, one latency step per cell and shape."""
        return len(cells) * (1 + len(self.config.shapes))

    def run(self, cells: list[Cell]) -> list[CellResult]:
        """Quality cell by cell, then latency shape by shape with every engine's rounds interleaved."""
        results = {cell: CellResult(cell, []) for cell in cells}
        runnable = []
        for cell in cells:
            if self._guarded(cell, results[cell], lambda: self._quality_cell(cell, results[cell])):
                runnable.append(cell)
            self.on_advance()
        runnable = self._drop_reported_duplicates(runnable, results)
        for shape in self.config.shapes:
            for cell in cells:
                if cell not in runnable:
                    self.on_advance()
            self._latency_shape(shape, runnable, results)
        return list(results.values())

    def _drop_reported_duplicates(self, cells: list[Cell], results: dict[Cell, CellResult]) -> list[Cell]:
        """Cells whose engine reported the precision an earlier cell of its runtime already ran are not timed again.

        The plan predicts duplicates from the CPU flags; this catches what the flags did not
        predict, from what the engines reported while quality was measured.
        """
        first: dict[tuple[str, str, str, str], Cell] = {}
        kept = []
        for cell in cells:
            used = next((row.precision_used for row in results[cell].rows if row.extra.get("kind") == "quality"), None)
            key = (cell.runtime, cell.shift, cell.attention, cell.windows, str(used))
            if used is not None and key in first and cell.precision not in self.config.asked_precisions:
                original = first[key].label
                reason = (f"duplicate of {original}: the engine reported {used} for {cell.precision}, as {original} did; "
                          f"--precision {cell.precision} times it anyway")
                results[cell].rows.append(self._row(cell, None, kind=RowKind.SKIPPED.value, extra={"reason": reason, "duplicate_of": original}))
                continue
            if used is not None:
                first[key] = cell
            kept.append(cell)
        return kept

    def _step(self, cell: Cell, phase: str, detail: str = "") -> None:
        self.on_step(f"{cell.label}: {phase}{' ' + detail if detail else ''}")

    def _build_phase(self, cell: Cell) -> str:
        return "build + calibration (T91, minutes)" if cell.precision == "int8" else "build"

    def _export(self, cell: Cell) -> None:
        """Export the ONNX once per strategy as its own step, so the log shows it apart from the builds."""
        key = (cell.shift, cell.attention, cell.windows, self.guarded(cell))
        if cell.runtime in RUNTIMES_FROM_ONNX and key not in self._exported:
            if self.source(cell).onnx is None:
                self._step(cell, "export", f"ONNX ({cell.shift}/{cell.attention}/{cell.windows})")
            self.source(cell).onnx_path()
            self._exported.add(key)

    def _guarded(self, cell: Cell, result: CellResult, step: Callable[[], object], shape: Shape | None = None) -> bool:
        """Run one step of a cell; a skip or crash becomes that cell's row, never the whole run's end."""
        where = {"shape": _text(shape)} if shape else {}
        if reason := self.skip_reason(cell, f"latency at {_text(shape)}" if shape else "quality"):
            planned = self.config.planned.get(cell)
            if planned and planned.duplicate_of:
                where["duplicate_of"] = planned.duplicate_of
            result.rows.append(self._row(cell, None, kind=RowKind.SKIPPED.value, extra={"reason": reason, **where}))
            return False
        try:
            step()
        except (ElanDeployError, WorkerFailed) as exc:
            kind = exc.kind if isinstance(exc, WorkerFailed) else RowKind.SKIPPED.value
            result.rows.append(self._row(cell, None, kind=kind, extra={"reason": str(exc), **where}))
            return False
        except Exception as exc:  # a runtime crash in one cell must not lose the others
            detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
            result.rows.append(self._row(cell, None, kind=RowKind.FAILED.value, extra={"reason": detail[:300], **where}))
            return False
        return True

    def _quality_cell(self, cell: Cell, result: CellResult) -> None:
        if cell.runtime == "torch-compile" or not self.config.datasets:
            return  # torch.compile recompiles per image size: latency only
        self._export(cell)
        default = self.loader(cell, None).engine_shapes  # one H x W (Core ML): tiles at it; else whole images
        static = default if default.is_static else None
        loader = self.loader(cell, static or DEFAULT_SHAPES)
        self._step(cell, self._build_phase(cell), "(engine for quality)" if loader.needs_build else "(load)")
        t0 = time.perf_counter()
        engine = loader.open()
        self._quality(cell, engine, result, time.perf_counter() - t0, static)

    def _quality(self, cell: Cell, engine, result: CellResult, build_s: float, shapes: ShapeRange | None = None) -> None:
        upscaler = Upscaler(engine, self.scale, tile=None, shapes=shapes, multiple=self.loaded.config.window_multiple)
        for dataset in self.config.datasets:
            self._step(cell, "quality", f"{dataset.name} ({len(dataset)} images)")
            scores, fidelity, outputs = [], [], []
            reference = self.reference.get(dataset.name)
            for i, sample in enumerate(dataset):
                sr = upscaler(sample.lr.astype(np.float32))
                if reference is not None:
                    fidelity.append(psnr(sr, reference[i]))
                elif cell.is_reference:
                    outputs.append(sr)
                sr8 = to_uint8(sr)
                result.outputs.setdefault(dataset.name, []).append(sr8)
                scores.append((psnr_y(sr8, sample.hr, self.scale), ssim_y(sr8, sample.hr, self.scale)))
            if outputs:
                self.reference[dataset.name] = outputs
                fidelity = [float("inf")] * len(outputs)
            extra = {"build_s": round(build_s, 2)}
            if fidelity:
                finite = [f for f in fidelity if np.isfinite(f)]
                extra["fidelity_psnr"] = round(float(np.mean(finite)), 2) if finite else "inf"
            psnrs, ssims = zip(*scores)
            result.rows.append(self._row(cell, engine, kind=RowKind.QUALITY.value, dataset=dataset.name, images=len(scores),
                                         psnr=round(float(np.mean(psnrs)), 4), ssim=round(float(np.mean(ssims)), 4), extra=extra))
        if self.config.stress is not None:
            self._step(cell, "quality", f"{STRESS_DATASET} set (raw inputs and HR downscales)")
            fields = stress_fields(self.config.stress, upscaler, cell.precision)
            result.rows.append(self._row(cell, engine, kind=RowKind.QUALITY.value, dataset=STRESS_DATASET, **fields))

    def _latency_shape(self, shape: Shape, cells: list[Cell], results: dict[Cell, CellResult]) -> None:
        """Open workers while memory allows, time that batch in interleaved rounds, repeat."""
        multiple = self.loaded.config.window_multiple
        padded = (shape[0], shape[1], round_up(shape[2], multiple), round_up(shape[3], multiple))
        pending = list(cells)
        while pending:
            batch: dict[Cell, OpenWorker] = {}
            try:
                while pending and (not batch or (len(batch) < MAX_WORKERS and _available_mb() > MEMORY_RESERVE_MB)):
                    cell = pending.pop(0)
                    if (opened := self._open_worker(cell, shape, padded, results[cell])) is not None:
                        batch[cell] = opened
                self._time_batch(shape, batch, results)
            finally:
                for opened in batch.values():
                    opened.worker.close()
        for _ in cells:
            self.on_advance()

    def _time_batch(self, shape: Shape, batch: dict[Cell, OpenWorker], results: dict[Cell, CellResult]) -> None:
        config = self.config.latency
        rounds: dict[Cell, list[list[float]]] = {cell: [] for cell in batch}
        load = CpuLoad()
        load.watch(os.getpid())
        for opened in batch.values():
            load.watch(opened.worker.pid)
        cut_after: int | None = None
        for r in range(config.rounds):
            if r and self.config.out_of_time():  # every opened engine gets at least one round
                cut_after = r
                break
            for cell in list(batch):
                self._step(cell, "latency", f"{_text(shape)} round {r + 1}/{config.rounds}")
                time.sleep(config.settle_s)
                done = rounds[cell]
                if r == 0:
                    warmup, budget = config.warmup, config.round_budget()
                else:  # as many runs as the first round, so every round weighs the same
                    warmup = int(config.warmup > 0 and float(np.median(done[0])) < config.rewarm_below_s)
                    budget = (len(done[0]), len(done[0]), 0.0)
                try:
                    done.append(batch[cell].worker.run(warmup, *budget))
                    load.sample()
                except WorkerFailed as exc:
                    self._drop_worker(cell, shape, batch, load, exc, results[cell])
        peaks = {}
        for cell in list(batch):
            load.unwatch(batch[cell].worker.pid)
            try:
                peaks[cell] = batch[cell].worker.stop()
            except WorkerFailed as exc:
                self._drop_worker(cell, shape, batch, load, exc, results[cell])
        load.finish()
        note = f"--time-limit reached: {cut_after} of {config.rounds} rounds timed" if cut_after else None
        for cell, opened in batch.items():
            self._latency_row(cell, shape, opened, rounds[cell], peaks[cell], load, results[cell], note)

    def _drop_worker(self, cell: Cell, shape: Shape, batch: dict[Cell, OpenWorker], load: CpuLoad, exc: WorkerFailed, result: CellResult) -> None:
        load.unwatch(batch.pop(cell).worker.pid)
        result.rows.append(self._row(cell, None, kind=exc.kind, extra={"reason": str(exc), "shape": _text(shape)}))

    def _open_worker(self, cell: Cell, shape: Shape, padded: Shape, result: CellResult) -> OpenWorker | None:
        """Build the static engine here (cached), then let a worker process load and warm it."""
        build_s, size_mb = 0.0, None
        loader = self.loader(cell, ShapeRange.static(padded))

        def build() -> None:
            nonlocal build_s, size_mb
            t0 = time.perf_counter()
            if loader.needs_build:
                self._export(cell)
                self._step(cell, self._build_phase(cell), f"(static engine for {_text(shape)})")
                folder = loader.build()
                size_mb = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20
            build_s = time.perf_counter() - t0

        spec = WorkerSpec(loader, allocator=self.config.allocator)
        started: list[LatencyWorker] = []

        def start() -> None:
            doing = "compile + warm-up" if cell.runtime == "torch-compile" else "load + warm-up"
            self._step(cell, "latency", f"{_text(shape)} {doing} in its worker")
            if self.config.deadline is None:
                started.append(LatencyWorker(spec))
                return
            try:  # a compile that runs past the limit is stopped (torch.compile takes minutes per shape)
                started.append(LatencyWorker(spec, ready_timeout_s=max(30.0, self.config.deadline - time.monotonic())))
            except WorkerFailed as exc:
                if exc.timed_out and self.config.out_of_time():
                    raise ElanDeployError(f"--time-limit {self.config.time_limit_s:g} s reached while it opened its engine") from None
                raise

        if not self._guarded(cell, result, build, shape) or not self._guarded(cell, result, start, shape):
            return None
        return OpenWorker(started[0], build_s + started[0].ready.open_s, size_mb)

    def _latency_row(
        self, cell: Cell, shape: Shape, opened: OpenWorker, rounds: list[list[float]], peak_mb: float, load: CpuLoad,
        result: CellResult, note: str | None = None,
    ) -> None:
        ready = opened.worker.ready
        stats = LatencyStats.from_rounds(rounds, shape, self.scale)
        key = _text(opened.worker.spec.shape)
        fidelity: float | str | None = None
        if cell.is_reference:
            self.reference_latency_out[key] = ready.first_output
        elif key in self.reference_latency_out:
            value = psnr(ready.first_output, self.reference_latency_out[key])
            fidelity = round(value, 2) if np.isfinite(value) else "inf"
        extra = {
            **stats.to_json(), "engine_shape": key, "build_s": round(opened.build_s, 2),
            "peak_rss_mb": round(peak_mb, 1), "engine_rss_mb": round(peak_mb - ready.rss_before_open_mb, 1),
            "allocator": ready.allocator, "other_cpu_pct": load.other_pct, "steal_pct": load.steal_pct, "loadavg_1m": load.loadavg_1m,
            "engine_mb": round(opened.size_mb, 2) if opened.size_mb is not None else None,
            "latency_input_fidelity_psnr": fidelity, "note": note,
        }
        result.rows.append(self._row(cell, _InfoOnly(ready.info), kind=RowKind.LATENCY.value, extra={k: v for k, v in extra.items() if v is not None}))


Shape = tuple[int, int, int, int]
MAX_WORKERS = 16  # engines timed side by side at one shape
MEMORY_RESERVE_MB = 3072  # open no further worker once less memory than this is available
_available_mb = lambda: float("inf") if (mb := mem_available()) is None else mb / 2**20  # unreadable: MAX_WORKERS bounds a batch


@dataclass(frozen=True)
class OpenWorker:
    worker: LatencyWorker
    build_s: float  # engine build (or cache lookup) here plus load and first call in the worker
    size_mb: float | None  # engine files on disk; None for runtimes that run the checkpoint


def _text(shape: Shape) -> str:
    return "x".join(map(str, shape))


@dataclass(frozen=True)
class _InfoOnly:
    """What `_row` reads of an engine, for engines that live in a worker process."""

    info: Any
