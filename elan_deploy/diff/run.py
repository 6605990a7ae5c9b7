"""`run_diff`: build the engines, run them on natural images, compare outputs (and layers)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from elan_deploy.diff.engines import EngineSet, PreparedEngine, check_layer_reference, polygraphy_logging
from elan_deploy.diff.inputs import DiffInputs, natural_inputs
from elan_deploy.diff.layers import DEFAULT_BUDGET_MB, LayerReport, LayerTarget, compare_layers
from elan_deploy.diff.outputs import EngineDiff, Tolerances, compare_outputs, verdict
from elan_deploy.diff.spec import EngineSpec
from elan_deploy.runtimes import RUNTIMES_FROM_ONNX, ModelSource, ShapeRange
from elan_deploy.runtimes.base import Shape

SCHEMA = "elan-deploy/diff/1"
Progress = Callable[[str], None]


@dataclass
class DiffConfig:
    engines: list[EngineSpec]  # the first is the reference
    shape: Shape = (1, 3, 192, 320)
    iterations: int = 4
    images: Path | None = None  # default: the bundled T91 samples
    tolerances: Tolerances = field(default_factory=Tolerances)
    threads: int | None = None
    layers: bool = False
    layer_psnr_db: float = 40.0
    layer_budget_mb: float = DEFAULT_BUDGET_MB
    verbose: bool = False


@dataclass
class DiffResult:
    config: DiffConfig
    rows: list[EngineDiff]
    inputs: DiffInputs
    reference_results: Any  # Polygraphy RunResults holding the reference's outputs only
    layer_reports: list[LayerReport] | None = None
    layer_notes: list[str] = field(default_factory=list)
    source_onnx: str | None = None

    @property
    def failed(self) -> list[EngineDiff]:
        return [row for row in self.rows if not row.passed]

    @property
    def first_divergence(self) -> str | None:
        """The earliest (in graph order) first divergence over all engines, or None."""
        firsts = [next(row for row in report.rows if not row.passed) for report in self.layer_reports or [] if report.first_divergence]
        return min(firsts, key=lambda row: row.depth).tensor if firsts else None

    def to_json(self, command: str) -> dict[str, Any]:
        from elan_deploy.results import machine_info

        c = self.config
        doc: dict[str, Any] = {
            "schema": SCHEMA,
            "command": command,
            "machine": machine_info(),
            "reference": c.engines[0].label,
            "shape": "x".join(map(str, c.shape)),
            "iterations": c.iterations,
            "images": [str(p) for p in self.inputs.images],
            "onnx": self.source_onnx,
            "psnr_threshold_db": c.tolerances.psnr_db,
            "atol": c.tolerances.atol,
            "rtol": c.tolerances.rtol,
            "passed": not self.failed,
            "failed": [row.engine for row in self.failed],
            "engines": [row.to_json() for row in self.rows],
        }
        if self.layer_reports is not None:
            doc["layer_psnr_threshold_db"] = c.layer_psnr_db
            doc["layers"] = [row.to_json() for report in self.layer_reports for row in report.rows]
            doc["first_divergence"] = self.first_divergence
            doc["layer_notes"] = self.layer_notes
        return doc


def save_reference_outputs(result: DiffResult, path: Path) -> None:
    """The reference's outputs as a Polygraphy RunResults JSON (`polygraphy run --load-outputs`), atomically."""
    from elan_deploy.fileio import atomic_path

    with atomic_path(path) as tmp:
        result.reference_results.save(str(tmp))


def _layer_target(engines: EngineSet, prepared: PreparedEngine) -> LayerTarget | None:
    runtime = prepared.spec.runtime
    if runtime == "onnxruntime":
        from elan_deploy.runtimes.onnxruntime_rt import ENGINE_FILE

        return LayerTarget(prepared.label, "onnxruntime", prepared.folder / ENGINE_FILE)
    if runtime == "openvino":
        from elan_deploy.runtimes.openvino_rt import IR_XML

        # The precision the engine actually ran (INT8 engines: their float parts' precision).
        used = str(prepared.info.get("precision_used") or prepared.spec.precision.value).split("+")[-1]
        precision = used if used in ("fp32", "bf16", "fp16") else "fp32"
        return LayerTarget(prepared.label, "openvino", prepared.folder / IR_XML, precision=precision, threads=engines.threads)
    return None


def _layer_graph(engines: EngineSet, target: LayerTarget) -> Path:
    """The ONNX whose node order is the depth axis: the reference's own ONNX, or the export for OpenVINO."""
    return target.model if target.kind == "onnxruntime" else Path(engines.source.onnx_path())


def run_diff(source: ModelSource, cache_root: Path, config: DiffConfig, progress: Progress | None = None) -> DiffResult:
    from polygraphy.comparator import Comparator, RunResults

    say = progress or (lambda message: None)
    if config.layers:
        check_layer_reference(config.engines[0])
    engines = EngineSet(source, ShapeRange.static(config.shape), config.threads, cache_root)
    input_name, output_name = engines.io_names(config.engines)
    inputs = natural_inputs(config.shape, config.iterations, config.images, input_name)
    prepared = []
    for spec in config.engines:
        say(f"build {spec}")
        prepared.append(engines.prepare(spec))
    runners = [engines.runner(p, input_name, output_name) for p in prepared]
    run_results = RunResults()
    with polygraphy_logging(config.verbose):
        for p, runner in zip(prepared, runners):  # one engine in memory at a time, as Comparator.run does
            say(f"run {p.label}: {config.iterations} x {'x'.join(map(str, config.shape))}")
            run_results.extend(Comparator.run([runner], data_loader=inputs.feeds))
        say("compare")
        numbers = compare_outputs(run_results, config.tolerances)
    rows = []
    for index, (p, row) in enumerate(zip(prepared, numbers)):
        diff = EngineDiff(p.label, p.spec.runtime, p.spec.precision.value, reference=index == 0, **p.info)
        diff.nonfinite = row["nonfinite"]
        diff.max_abs_error = row.get("max_abs_error", 0.0 if index == 0 else None)
        diff.mean_abs_error = row.get("mean_abs_error", 0.0 if index == 0 else None)
        diff.psnr_db = row.get("psnr_db", math.inf if index == 0 else None)
        diff.worst_psnr_db = row.get("worst_psnr_db", math.inf if index == 0 else None)
        diff.passed, diff.reasons = verdict(row, config.tolerances)
        rows.append(diff)
    reference_results = RunResults()
    reference_results.append(run_results[0])
    result = DiffResult(config, rows, inputs, reference_results)
    if any(p.spec.runtime in RUNTIMES_FROM_ONNX for p in prepared):
        result.source_onnx = str(source.onnx_path())
    if config.layers:
        _run_layers(engines, prepared, rows, result, config, say)
    return result


def _run_layers(engines: EngineSet, prepared: list[PreparedEngine], rows: list[EngineDiff], result: DiffResult, config: DiffConfig, say: Progress) -> None:
    reference = _layer_target(engines, prepared[0])
    assert reference is not None  # check_layer_reference ran first
    candidates = []
    for p, row in zip(prepared[1:], rows[1:]):
        target = _layer_target(engines, p)
        if target is None:
            result.layer_notes.append(f"{p.label}: no ONNX graph runs inside it here, so it has no per-layer comparison")
        else:
            candidates.append((target, row))
    feed = dict(result.inputs.feeds[0])
    if config.shape[0] > 1:  # one image is enough to locate a divergence; memory scales with it
        feed = {name: value[:1] for name, value in feed.items()}
    with polygraphy_logging(config.verbose):
        reports = compare_layers(
            reference, [t for t, _ in candidates], _layer_graph(engines, reference), feed,
            config.layer_psnr_db, config.layer_budget_mb, say,
        )
    for (target, row), report in zip(candidates, reports):
        row.layers_compared = len(report.rows)
        row.first_divergence = report.first_divergence
    result.layer_reports = reports
