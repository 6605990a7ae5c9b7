"""Layer by layer: every intermediate tensor made an output, compared in graph order.

For ONNX Runtime engines this is Polygraphy's mark-all (`ModifyOutputs` with
`constants.MARK_ALL`, or with the names of one memory-sized group of tensors when all of them
would not fit at once) on the ONNX file the engine runs: the exported FP32 ONNX, the typed
FP16 ONNX or the Q/DQ INT8 ONNX. For OpenVINO engines it is the engine's own IR (converted
from the same ONNX, or quantized by NNCF for int8) with the same tensors added as outputs:
OpenVINO keeps ONNX tensor names. Tensors are matched by name between the reference graph
and each engine's graph where both have them (a Q/DQ graph keeps the float tensor names of
the graph it was made from and adds its quantize/dequantize tensors).

Each tensor gets its PSNR against the reference tensor, with the reference's largest
magnitude as peak, and its max absolute error; the first tensor in graph order whose PSNR is
below the layer threshold (or that holds NaN/Inf) is the first divergence.

A tensor marked as an output cannot be fused away, so in this mode a runtime runs the graph
less fused than its engine does (ONNX Runtime does not fold Q/DQ pairs into QLinearConv
then): the per-layer numbers locate where error enters, the output table measures the engine.
"""

from __future__ import annotations

import glob
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from elan_deploy.diff.graph import graph_tensors, onnx_tensor_names, plan_chunks

DEFAULT_BUDGET_MB = 1500


@dataclass
class LayerTarget:
    """What one engine runs, tensor by tensor: a graph file and the runtime that runs it."""

    label: str
    kind: str  # "onnxruntime" (model: an ONNX file) or "openvino" (model: an IR .xml or an ONNX file)
    model: Path
    precision: str | None = None  # OpenVINO's pinned inference precision (fp32, bf16, fp16)
    threads: int | None = None

    def tensor_names(self) -> set[str]:
        if self.kind == "onnxruntime":
            return onnx_tensor_names(self.model)
        from elan_deploy.diff.runners import import_openvino, tensor_names

        return tensor_names(import_openvino().Core().read_model(str(self.model)))

    def runner(self, outputs: list[str], mark_all: bool = False, input_shape: tuple[int, ...] | None = None):
        """A Polygraphy runner whose outputs are `outputs` (or every tensor, with `mark_all`).

        `input_shape` reshapes an OpenVINO IR (built static for the diff's batch) to the feed's.
        """
        if self.kind == "onnxruntime":
            from polygraphy import constants
            from polygraphy.backend.onnx import BytesFromOnnx, ModifyOutputs, OnnxFromPath
            from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

            # ModifyOutputs takes fnmatch patterns: escape names so '[' or '*' in one stays literal.
            marked = constants.MARK_ALL if mark_all else [glob.escape(name) for name in outputs]
            model = ModifyOutputs(OnnxFromPath(str(self.model)), outputs=marked)
            return OnnxrtRunner(SessionFromOnnx(BytesFromOnnx(model), providers=["CPUExecutionProvider"]), name=self.label)
        from elan_deploy.diff.runners import CompileOpenVINOModel, OpenVINORunner

        loader = CompileOpenVINOModel(self.model, precision=self.precision, threads=self.threads, outputs=outputs, input_shape=input_shape)
        return OpenVINORunner(loader, name=self.label, output_names=outputs)


@dataclass
class LayerRow:
    engine: str
    tensor: str
    op: str
    depth: int
    max_abs_error: float
    psnr_db: float
    peak: float
    passed: bool

    def to_json(self) -> dict[str, Any]:
        psnr: float | str = self.psnr_db if math.isfinite(self.psnr_db) else str(self.psnr_db)
        return {
            "engine": self.engine, "tensor": self.tensor, "op": self.op, "depth": self.depth,
            "max_abs_error": self.max_abs_error, "psnr_db": psnr, "peak": self.peak, "passed": self.passed,
        }


@dataclass
class LayerReport:
    """One engine's tensors against the reference's, in graph order."""

    engine: str
    rows: list[LayerRow] = field(default_factory=list)
    skipped: str | None = None  # why this engine has no layer comparison

    @property
    def first_divergence(self) -> str | None:
        return next((row.tensor for row in self.rows if not row.passed), None)


def _run_one(runner, feed: dict):
    """One inference through Polygraphy's Comparator: the runner's IterationResult."""
    from polygraphy.comparator import Comparator

    results = Comparator.run([runner], data_loader=[feed])
    return results[0][1][0]


def _exact_name(output_name: str, index: int, iter_result) -> list[str] | None:
    """Match tensors by name only: Polygraphy's default would fall back to matching by position."""
    return [output_name] if output_name in iter_result else None


def compare_layers(
    reference: LayerTarget,
    candidates: list[LayerTarget],
    graph: Path,
    feed: dict,
    threshold_db: float,
    budget_mb: float = DEFAULT_BUDGET_MB,
    progress: Callable[[str], None] | None = None,
) -> list[LayerReport]:
    """Every candidate's tensors against the reference's, ordered by `graph` (the reference's ONNX)."""
    from elan_deploy.diff.metrics import TensorPsnrCompareFunc

    shape = tuple(next(iter(feed.values())).shape)
    tensors = graph_tensors(graph, shape)
    reference_names = reference.tensor_names()
    shared: dict[str, set[str]] = {}
    for candidate in candidates:
        names = candidate.tensor_names()
        shared[candidate.label] = {t.name for t in tensors if t.name in reference_names and t.name in names}
    wanted = set().union(*shared.values()) if shared else set()
    ordered = [t for t in tensors if t.name in wanted]
    by_name = {t.name: t for t in ordered}
    # Reference and candidate outputs of one group are in memory together.
    chunks = plan_chunks(ordered, int(budget_mb * 2**20))
    single = len(chunks) == 1 and len(ordered) == len(tensors)
    compare = TensorPsnrCompareFunc(psnr_threshold=threshold_db, find_output_func=_exact_name)
    reports = {c.label: LayerReport(c.label) for c in candidates}
    for number, chunk in enumerate(chunks, 1):
        names = [t.name for t in chunk]
        if progress:
            progress(f"layers {number}/{len(chunks)}: {reference.label}")
        ref_result = _run_one(reference.runner(names, mark_all=single, input_shape=shape), feed)
        for candidate in candidates:
            mine = [n for n in names if n in shared[candidate.label]]
            if not mine:
                continue
            if progress:
                progress(f"layers {number}/{len(chunks)}: {candidate.label}")
            cand_result = _run_one(candidate.runner(mine, mark_all=single and len(mine) == len(names), input_shape=shape), feed)
            for name, result in compare(cand_result, ref_result).items():
                if name not in by_name or isinstance(result, bool):
                    continue
                tensor = by_name[name]
                reports[candidate.label].rows.append(
                    LayerRow(candidate.label, name, tensor.op, tensor.depth, float(result.max_absdiff), float(result.psnr), float(result.peak), bool(result))
                )
            del cand_result
        del ref_result
    for report in reports.values():
        report.rows.sort(key=lambda row: (row.depth, row.tensor))
    return [reports[c.label] for c in candidates]


def table_rows(report: LayerReport, ops: frozenset[str] | None) -> list[LayerRow]:
    """The rows to print: those of `ops` (all when None), and the first divergence in any case."""
    first = report.first_divergence
    return [row for row in report.rows if ops is None or row.op in ops or row.tensor == first]
