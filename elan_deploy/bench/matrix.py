"""The benchmark matrix: which runtime × precision × export-strategy cells exist.

Cells are data so that filters (`--runtime`, `--precision`) and reports treat them alike; a
cell that cannot run here is kept and reported as skipped with its reason, never dropped.

The default plan adapts to the CPU (`plan_for_cpu`): a precision the CPU only emulates, or that
the runtime silently replaces, is listed as skipped with the reason, and a cell that would
execute the same precision as an earlier cell of its runtime is listed as that cell's duplicate.
Both still run when their precision is asked for by name (`--precision bf16`).
"""

from __future__ import annotations

from dataclasses import dataclass

from elan_deploy.cpu import CpuCaps, cpu_caps, precision_plan
from elan_deploy.export.strategies import DEFAULT_WINDOWS, WINDOW_STRATEGIES
from elan_deploy.runtimes import is_available

REFERENCE = ("torch", "fp32")
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
    ("ncnn", "fp32"),
    ("ncnn", "fp16"),
    ("ncnn", "int8"),
)
# Export strategies compared on the ONNX runtimes at fp32 (`--strategies all`).
STRATEGY_RUNTIMES = ("onnxruntime", "openvino")


@dataclass(frozen=True)
class Cell:
    runtime: str
    precision: str
    shift: str = "depthwise"
    attention: str = "shared"
    windows: str = DEFAULT_WINDOWS

    @property
    def label(self) -> str:
        base = f"{self.runtime} {self.precision}"
        if self.runtime.startswith("torch") or (self.shift, self.attention, self.windows) == ("depthwise", "shared", DEFAULT_WINDOWS):
            return base
        if self.windows != DEFAULT_WINDOWS:
            return f"{base} [{self.shift}/{self.attention}/{self.windows}]"
        return f"{base} [{self.shift}/{self.attention}]"

    @property
    def uses_export(self) -> bool:
        return not self.runtime.startswith("torch")

    @property
    def is_reference(self) -> bool:
        """PyTorch FP32: the paper model every other cell's fidelity is measured against."""
        return (self.runtime, self.precision) == REFERENCE


def row_label(row: dict) -> str:
    """`Cell.label` of a results.json row."""
    return Cell(row["runtime"], row["precision"], row.get("shift", "depthwise"), row.get("attention", "shared"), row.get("windows", "reshape")).label


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
            # the other window forms (reshape chains vs one Gather of pixels per window group)
            cells += [
                Cell(runtime, precision, windows=windows)
                for windows in WINDOW_STRATEGIES if windows != DEFAULT_WINDOWS
                for precision in ("fp32", "bf16", "int8") if (runtime, precision) in DEFAULT_CELLS
            ]
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


@dataclass(frozen=True)
class PlannedSkip:
    """Why the default plan leaves a cell out on this CPU; `duplicate_of` names the cell that measures it."""

    reason: str
    duplicate_of: str | None = None


def plan_for_cpu(cells: list[Cell], asked_precisions: list[str] | None = None, caps: CpuCaps | None = None) -> dict[Cell, PlannedSkip]:
    """The cells the default plan skips on this CPU, with their reasons.

    A precision named in `asked_precisions` (the user's `--precision`) always runs. Otherwise a
    cell is skipped when the CPU does not run its precision natively, or when the runtime would
    execute the same precision as an earlier cell of the same runtime and export strategy
    (OpenVINO fp16 runs bf16 on Zen 4/5). torch fp32, the fidelity reference, always runs.
    """
    caps = caps or cpu_caps()
    asked = set(asked_precisions or ())
    skips: dict[Cell, PlannedSkip] = {}
    runs_first: dict[tuple[str, str, str, str, str], Cell] = {}
    for cell in cells:
        if cell.precision in asked or (cell.runtime, cell.precision) == ("torch", "fp32"):
            continue
        plan = precision_plan(cell.runtime, cell.precision, caps)
        key = (cell.runtime, cell.shift, cell.attention, cell.windows, plan.runs)
        if not plan.native:
            also = f"; the {runs_first[key].label} cell measures what it runs" if key in runs_first else ""
            skips[cell] = PlannedSkip(f"not native here: {plan.reason}{also}; --precision {cell.precision} runs it anyway")
        elif key in runs_first:
            original = runs_first[key].label
            skips[cell] = PlannedSkip(
                f"duplicate of {original}: {cell.runtime} runs {plan.runs} when {cell.precision} is asked on this CPU "
                f"({caps.describe()}); --precision {cell.precision} times it anyway", duplicate_of=original,
            )
        else:
            runs_first[key] = cell
    return skips
