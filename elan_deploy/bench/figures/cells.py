"""The latency cells a figure shows, and which of them are worth their latency.

A cell is one runtime × precision (× export form) at the main shape: its p50 and, where it was
measured, its dataset Y-PSNR. The Pareto front is the fastest cell for each quality level; both
the scatter plot and the choice of engines for the crops start from it, so it is computed here
once, as pure functions tested without drawing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from elan_deploy.bench.matrix import row_label
from elan_deploy.results import LatencyRow, QualityRow, ResultsDoc, ResultsLike

REFERENCE_CELL = "torch fp32"
QUALITY_TIE_DB = 0.001  # a slower cell joins the Pareto front only if it is better by more than this


@dataclass(frozen=True)
class CellPoint:
    """One latency cell at the main shape, with its quality if it has any."""

    cell: str
    runtime: str
    precision: str
    precision_used: str | None
    p50_ms: float
    psnr: float | None  # dataset Y-PSNR; None for latency-only cells
    fidelity_psnr: float | str | None  # PSNR against torch FP32 output ("inf" = identical)

    @property
    def label(self) -> str:
        used = self.precision_used
        ran_as = f" (ran {used})" if used and not used.startswith(self.precision) else ""
        return self.cell + ran_as


def written_fidelity(quality: QualityRow | None, latency: LatencyRow | None) -> float | str | None:
    """A cell's fidelity column: its quality row's, else what its latency input measured; None where neither was.

    As written, "inf" for an output identical to torch FP32's: the plot prints that as ∞.
    """
    if quality is not None and (value := quality.get("fidelity_psnr")) is not None:
        return value
    return latency.get("latency_input_fidelity_psnr") if latency is not None else None


def cell_points(doc: ResultsLike, main_shape: str, dataset: str) -> list[CellPoint]:
    """Every latency cell at `main_shape`, in document order, with its `dataset` quality if measured."""
    doc = ResultsDoc.of(doc)
    quality = {row_label(r.data): r for r in doc.quality(dataset)}
    points = []
    for row in doc.latency(main_shape):
        if not row.p50_ms:
            continue
        label = row_label(row.data)
        q = quality.get(label)
        points.append(CellPoint(
            cell=label, runtime=row.runtime, precision=row.precision,
            precision_used=row.precision_used or (q.precision_used if q else None), p50_ms=row.p50_ms,
            psnr=q.psnr if q else None, fidelity_psnr=written_fidelity(q, row),
        ))
    return points


def pareto_front(points: Sequence[tuple[str, float, float]], tie_db: float = QUALITY_TIE_DB) -> list[str]:
    """Names of the (name, latency, quality) points that no other point beats, fastest first.

    Walking from the fastest cell up, a cell joins the front only if it is better than every
    faster cell by more than `tie_db`: paying latency for a few ten-thousandths of a dB is no
    trade anyone makes, and PSNR is reported to 4 decimals.
    """
    front: list[str] = []
    best = -math.inf
    for name, _, quality in sorted(points, key=lambda p: (p[1], -p[2])):
        if quality > best + tie_db:
            front.append(name)
            best = quality
    return front
