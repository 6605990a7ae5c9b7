"""Every engine against the reference on the network output, with Polygraphy's Comparator.

`Comparator.run` runs the engines one after another on the same feed dicts (one engine in
memory at a time) and `Comparator.compare_accuracy` compares each engine with the reference
using Polygraphy's `SimpleCompareFunc` (max/mean absolute error, and the element-wise
`--atol/--rtol` check when asked) and `ImagePsnrCompareFunc` (PSNR, peak 255). An engine
passes when every batch passes and its output holds no NaN/Inf.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from elan_deploy.diff.metrics import ImagePsnrCompareFunc, pooled_psnr


@dataclass(frozen=True)
class Tolerances:
    psnr_db: float = 40.0
    atol: float | None = None
    rtol: float | None = None

    @property
    def elementwise(self) -> bool:
        return self.atol is not None or self.rtol is not None


@dataclass
class EngineDiff:
    """One engine's output against the reference's (the reference's own row compares it with itself)."""

    engine: str
    runtime: str
    precision: str
    reference: bool
    precision_used: str | None = None
    runtime_version: str | None = None
    threads: int | None = None
    device: str | None = None
    max_abs_error: float | None = None
    mean_abs_error: float | None = None
    psnr_db: float | None = None  # all batches pooled
    worst_psnr_db: float | None = None  # the worst batch
    nonfinite: int = 0
    passed: bool = True
    reasons: list[str] = field(default_factory=list)
    first_divergence: str | None = None  # with --layers: its first tensor below the layer threshold
    layers_compared: int | None = None  # with --layers: how many of its tensors were compared

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        for key in ("psnr_db", "worst_psnr_db"):  # JSON has no inf: identical outputs say "inf"
            if isinstance(doc[key], float) and not math.isfinite(doc[key]):
                doc[key] = str(doc[key])
        if self.layers_compared is None:
            doc.pop("layers_compared")
            doc.pop("first_divergence")
        return doc


def count_nonfinite(run: list) -> int:
    """NaN/Inf values over every output of every iteration of one runner."""
    total = 0
    for iteration in run:
        for value in iteration.values():
            array = np.asarray(value)
            if np.issubdtype(array.dtype, np.floating):
                total += int(array.size - np.count_nonzero(np.isfinite(array)))
    return total


def compare_outputs(run_results, tolerances: Tolerances) -> list[dict[str, Any]]:
    """Per engine (in run order; the first is the reference): the numbers of its rows.

    `run_results` is Polygraphy's `RunResults` from `Comparator.run`.
    """
    from polygraphy.comparator import Comparator, SimpleCompareFunc

    names = list(run_results.keys())
    simple = SimpleCompareFunc(
        check_error_stat="elemwise",
        atol=tolerances.atol if tolerances.atol is not None else 0.0,
        rtol=tolerances.rtol if tolerances.rtol is not None else 0.0,
    )
    psnr = ImagePsnrCompareFunc(psnr_threshold=tolerances.psnr_db)
    comparisons = [(i, 0) for i in range(1, len(names))]
    accuracy = Comparator.compare_accuracy(run_results, comparisons=comparisons, compare_func=[simple, psnr])
    rows = [{"nonfinite": count_nonfinite(run_results[0][1])}]
    for index in range(1, len(names)):
        pair = (names[index], names[0])
        simple_results = [r for iteration in accuracy[0][pair] for r in iteration.values()]
        psnr_results = [r for iteration in accuracy[1][pair] for r in iteration.values()]
        row: dict[str, Any] = {"nonfinite": count_nonfinite(run_results[index][1])}
        if simple_results and not isinstance(simple_results[0], bool):
            row["max_abs_error"] = max(float(r.max_absdiff) for r in simple_results)
            row["mean_abs_error"] = float(np.mean([r.mean_absdiff for r in simple_results]))
            row["elementwise_passed"] = all(bool(r) for r in simple_results)
        else:  # shapes differed: Polygraphy returns a bare False
            row["shape_mismatch"] = True
        values = [float(r.psnr) for r in psnr_results if not isinstance(r, bool)]
        row["psnr_db"] = pooled_psnr(values) if values else math.nan
        row["worst_psnr_db"] = min(values) if values else math.nan
        row["psnr_passed"] = bool(psnr_results) and all(bool(r) for r in psnr_results)
        rows.append(row)
    return rows


def verdict(row: dict[str, Any], tolerances: Tolerances) -> tuple[bool, list[str]]:
    """Pass/fail of one engine's numbers, with the reasons it failed."""
    reasons = []
    if row.get("nonfinite"):
        reasons.append(f"{row['nonfinite']} NaN/Inf output values")
    if row.get("shape_mismatch"):
        reasons.append("output shape differs from the reference")
    if "psnr_passed" in row and not row["psnr_passed"]:
        worst = row.get("worst_psnr_db", math.nan)
        reasons.append(f"PSNR {worst:.2f} dB in its worst batch < {tolerances.psnr_db:g} dB")
    if tolerances.elementwise and "elementwise_passed" in row and not row["elementwise_passed"]:
        reasons.append(
            f"values beyond atol={tolerances.atol if tolerances.atol is not None else 0:g} "
            f"and rtol={tolerances.rtol if tolerances.rtol is not None else 0:g} (max abs error {row['max_abs_error']:.4g})"
        )
    return not reasons, reasons
