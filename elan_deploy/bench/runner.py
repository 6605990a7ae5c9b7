"""Run the benchmark matrix: build each engine, measure quality and latency, collect rows.

Every cell goes through the same code: an engine from `open_engine`, the `Upscaler` for whole
images, the paper's metrics for quality, the torch FP32 output as the fidelity reference, and
`measure_latency` on a natural input at each requested shape with a static engine per shape.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from elan_deploy.bench.latency import LatencyConfig, measure_latency, natural_input, rss_mb
from elan_deploy.bench.matrix import Cell, unavailable_reason
from elan_deploy.datasets import SRDataset
from elan_deploy.errors import ElanDeployError
from elan_deploy.imaging import list_images, read_image, to_uint8
from elan_deploy.metrics import psnr, psnr_y, ssim_y
from elan_deploy.model.checkpoint import LoadedCheckpoint
from elan_deploy.results import ResultRow
from elan_deploy.runtimes import DEFAULT_SHAPES, BuildOptions, EngineCache, ModelSource, ShapeRange, open_engine
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
    cache: EngineCache | None = None
    onnx: Path | None = None  # an exported FP32 ONNX to use for the default-strategy cells


@dataclass
class CellResult:
    cell: Cell
    rows: list[ResultRow]
    outputs: dict[str, list[np.ndarray]] = field(default_factory=dict)  # dataset -> SR uint8 images


class BenchRunner:
    def __init__(self, loaded: LoadedCheckpoint, config: BenchConfig, on_step: Callable[[str], None] | None = None) -> None:
        self.loaded = loaded
        self.config = config
        self.on_step = on_step or (lambda message: None)
        self.sources: dict[tuple[str, str], ModelSource] = {}
        self.reference: dict[str, list[np.ndarray]] = {}  # dataset -> torch fp32 float outputs
        self.reference_latency_out: dict[str, np.ndarray] = {}

    @property
    def scale(self) -> int:
        return self.loaded.config.scale

    def source(self, cell: Cell) -> ModelSource:
        key = (cell.shift, cell.attention)
        if key not in self.sources:
            given = self.config.onnx if key == ("depthwise", "shared") else None
            self.sources[key] = ModelSource(
                self.loaded, shift=cell.shift, attention=cell.attention, onnx=given, work_dir=self.config.work_dir / "onnx"
            )
        return self.sources[key]

    def _row(self, cell: Cell, engine, **fields) -> ResultRow:
        info = engine.info if engine is not None else None
        extra = {"kind": fields.pop("kind")}
        if cell.uses_export:
            extra.update(shift=cell.shift, attention=cell.attention)
        extra.update(fields.pop("extra", {}))
        return ResultRow(
            model=self.loaded.config.model_id, runtime=cell.runtime, precision=cell.precision,
            dataset=fields.pop("dataset", None) or "-", images=fields.pop("images", 0),
            runtime_version=info.runtime_version if info else None,
            precision_used=info.precision_used if info else None,
            threads=info.threads if info else None, extra=extra, **fields,
        )

    def skip_reason(self, cell: Cell) -> str | None:
        if self.config.quick:
            for key, why in SLOW_TO_PREPARE.items():
                if key in (cell.runtime, cell.precision):
                    return f"--quick skips it ({why})"
        return unavailable_reason(cell)

    def run_cell(self, cell: Cell) -> CellResult:
        if reason := self.skip_reason(cell):
            return CellResult(cell, [self._row(cell, None, kind="skipped", extra={"reason": reason})])
        try:
            return self._run_cell(cell)
        except ElanDeployError as exc:
            return CellResult(cell, [self._row(cell, None, kind="skipped", extra={"reason": str(exc)})])
        except Exception as exc:  # a runtime crash in one cell must not lose the others
            detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
            return CellResult(cell, [self._row(cell, None, kind="failed", extra={"reason": detail[:300]})])

    def _run_cell(self, cell: Cell) -> CellResult:
        options = BuildOptions(threads=self.config.threads)
        result = CellResult(cell, [])
        if cell.runtime != "torch-compile":
            self.on_step(f"{cell.label}: build for quality")
            t0 = time.perf_counter()
            engine = open_engine(self.source(cell), cell.runtime, cell.precision, DEFAULT_SHAPES, options, self.config.cache)
            build_s = time.perf_counter() - t0
            self._quality(cell, engine, result, build_s)
        for shape in self.config.shapes:
            self._latency(cell, shape, options, result)
        return result

    def _quality(self, cell: Cell, engine, result: CellResult, build_s: float) -> None:
        upscaler = Upscaler(engine, self.scale, tile=None)
        for dataset in self.config.datasets:
            self.on_step(f"{cell.label}: {dataset.name}")
            scores, fidelity, outputs = [], [], []
            reference = self.reference.get(dataset.name)
            for i, sample in enumerate(dataset):
                sr = upscaler(sample.lr.astype(np.float32))
                if reference is not None:
                    fidelity.append(psnr(sr, reference[i]))
                elif (cell.runtime, cell.precision) == ("torch", "fp32"):
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
            result.rows.append(
                self._row(cell, engine, kind="quality", dataset=dataset.name, images=len(scores),
                          psnr=round(float(np.mean([s[0] for s in scores])), 4),
                          ssim=round(float(np.mean([s[1] for s in scores])), 4), extra=extra)
            )

    def _latency(self, cell: Cell, shape: tuple[int, int, int, int], options: BuildOptions, result: CellResult) -> None:
        n, c, h, w = shape
        padded = (n, c, round_up(h), round_up(w))
        self.on_step(f"{cell.label}: latency {'x'.join(map(str, shape))}")
        rss_before = rss_mb()
        t0 = time.perf_counter()
        engine = open_engine(self.source(cell), cell.runtime, cell.precision, ShapeRange.static(padded), options, self.config.cache)
        x = natural_input(padded, self._latency_image())
        first = engine(x)  # compiles lazily for torch.compile; counted as build time
        build_s = time.perf_counter() - t0
        stats = measure_latency(engine, x, self.scale, self.config.latency)
        key = "x".join(map(str, padded))
        fidelity: float | str | None = None
        if (cell.runtime, cell.precision) == ("torch", "fp32"):
            self.reference_latency_out[key] = first
        elif key in self.reference_latency_out:
            value = psnr(first, self.reference_latency_out[key])
            fidelity = round(value, 2) if np.isfinite(value) else "inf"
        engine_dir = engine.info.details.get("engine")
        size_mb = sum(p.stat().st_size for p in Path(engine_dir).rglob("*") if p.is_file()) / 2**20 if engine_dir else None
        extra = {
            **stats.to_json(), "shape": "x".join(map(str, shape)), "engine_shape": key, "build_s": round(build_s, 2),
            "peak_rss_delta_mb": round(stats.peak_rss_mb - rss_before, 1),
        }
        if size_mb is not None:
            extra["engine_mb"] = round(size_mb, 2)
        if fidelity is not None:
            extra["latency_input_fidelity_psnr"] = fidelity
        result.rows.append(self._row(cell, engine, kind="latency", extra=extra))

    def _latency_image(self) -> np.ndarray:
        return latency_image()


SAMPLES_DIR = Path(__file__).resolve().parents[1] / "calibration" / "samples"


def latency_image() -> np.ndarray:
    """A bundled T91 photograph (training data, never a test image) tiled into latency inputs."""
    images = list_images(SAMPLES_DIR) if SAMPLES_DIR.is_dir() else []
    if not images:
        raise ElanDeployError(f"bundled sample images missing from {SAMPLES_DIR}; reinstall elan-deploy")
    return read_image(max(images, key=lambda p: p.stat().st_size))
