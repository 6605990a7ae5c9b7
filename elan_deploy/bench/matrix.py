"""The benchmark matrix: which runtime × precision × export-strategy cells exist.

Cells are data so that filters (`--runtime`, `--precision`) and reports treat them alike; a
cell that cannot run here is kept and reported as skipped with its reason, never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from elan_deploy.runtimes import is_available

# (runtime, precision) in report order: baselines first, then engines.
DEFAULT_CELLS: tuple[tuple[str, str], ...] = (
    ("torch", "fp32"),
    ("torch", "bf16"),
    ("torch-compile", "fp32"),
    ("torch-compile", "bf16"),
    ("onnxruntime", "fp32"),
    ("onnxruntime", "fp16"),
    ("onnxruntime", "int8"),
    ("openvino", "fp32"),
    ("openvino", "bf16"),
    ("openvino", "fp16"),
    ("openvino", "int8"),
    ("tensorrt", "fp16"),
    ("tensorrt", "int8"),
    ("coreml", "fp32"),
    ("coreml", "fp16"),
    ("coreml", "int8"),
)
# Export strategies compared on the ONNX runtimes at fp32 (`--strategies all`).
STRATEGY_RUNTIMES = ("onnxruntime", "openvino")


@dataclass(frozen=True)
class Cell:
    runtime: str
    precision: str
    shift: str = "depthwise"
    attention: str = "shared"

    @property
    def label(self) -> str:
        base = f"{self.runtime} {self.precision}"
        if self.runtime.startswith("torch") or (self.shift, self.attention) == ("depthwise", "shared"):
            return base
        return f"{base} [{self.shift}/{self.attention}]"

    @property
    def uses_export(self) -> bool:
        return not self.runtime.startswith("torch")


def row_label(row: dict) -> str:
    """`Cell.label` of a results.json row."""
    return Cell(row["runtime"], row["precision"], row.get("shift", "depthwise"), row.get("attention", "shared")).label


def build_matrix(
    runtimes: list[str] | None = None,
    precisions: list[str] | None = None,
    strategies: bool = False,
) -> list[Cell]:
    from elan_deploy.export import ATTENTION_STRATEGIES, SHIFT_STRATEGIES

    cells = [Cell(r, p) for r, p in DEFAULT_CELLS]
    if strategies:
        for runtime in STRATEGY_RUNTIMES:
            for shift in SHIFT_STRATEGIES:
                for attention in ATTENTION_STRATEGIES:
                    if (shift, attention) != ("depthwise", "shared"):
                        cells.append(Cell(runtime, "fp32", shift, attention))
    if runtimes:
        cells = [c for c in cells if c.runtime in runtimes]
    if precisions:
        cells = [c for c in cells if c.precision in precisions]
    return cells


def unavailable_reason(cell: Cell) -> str | None:
    """Why a cell cannot run on this machine (None if it can)."""
    reason = is_available(cell.runtime)
    if reason is None and cell.runtime == "coreml":
        import platform

        if platform.system() != "Darwin":
            return "Core ML prediction needs macOS (conversion is tested on Linux)"
    return reason
