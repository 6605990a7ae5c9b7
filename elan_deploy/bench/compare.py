"""`bench --compare old.json`: flag latency and quality regressions against an earlier run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from elan_deploy.bench.matrix import row_label
from elan_deploy.results import LatencyRow, QualityRow, ResultsDoc, ResultsLike, Row


@dataclass(frozen=True)
class Regression:
    cell: str
    what: str
    old: float
    new: float

    def __str__(self) -> str:
        return f"{self.cell}: {self.what} {self.old:.4g} -> {self.new:.4g}"


def _where(row: Row) -> str | None:
    """What a measurement is of besides its cell: the shape a latency row timed, the dataset a quality row scored."""
    if isinstance(row, LatencyRow):
        return row.shape
    return row.dataset if isinstance(row, QualityRow) else None


def _key(row: Row) -> tuple:
    """The same measurement in two runs."""
    return (row.kind, row.runtime, row.precision, row.shift, row.attention, _where(row))


BASELINE_RUNTIME = "torch-compile"  # what a PyTorch user gets for free: the headline ratio's denominator
FALLBACK_REFERENCE = ("torch", "fp32")


def _latency_rows(doc: ResultsDoc, runtime: str, shape: str | None = None) -> list[LatencyRow]:
    """Timed rows of a torch runtime, which has no export form: the candidates for a reference cell."""
    return [r for r in doc.latency(shape) if r.runtime == runtime and r.shift is None and r.p50_ms]


def headline_reference(doc: ResultsLike, shape: str) -> dict[str, Any] | None:
    """The fastest torch-compile cell at `shape` in this run (fp32 or bf16, whichever the CPU runs faster).

    Speed-ups are quoted against it: an engine is worth shipping only if it beats what
    `torch.compile` gives a PyTorch user on the same machine, in the same run. None when the run
    has no torch-compile latency at that shape.
    """
    rows = _latency_rows(ResultsDoc.of(doc), BASELINE_RUNTIME, shape)
    if not rows:
        return None
    best = min(rows, key=lambda r: r.p50_ms)
    return {"cell": row_label(best.data), "runtime": best.runtime, "precision": best.precision, "shape": shape, "p50_ms": best.p50_ms}


@dataclass(frozen=True)
class LatencyChange:
    """One latency cell in two runs: what `--compare` prints for every cell, regression or not.

    `old_relative`/`new_relative` are the cell's p50 over the reference cell's p50 at the same
    shape in the same run. A shared machine that got slower between runs moves every p50 but
    not these ratios, so their change tells a slower host from a slower engine.
    """

    cell: str
    shape: str
    old_p50_ms: float
    new_p50_ms: float
    old_min_ms: float | None
    new_min_ms: float | None
    old_relative: float | None = None
    new_relative: float | None = None

    @property
    def change_pct(self) -> float:
        return 100 * (self.new_p50_ms / self.old_p50_ms - 1)

    @property
    def relative_change_pct(self) -> float | None:
        if self.old_relative is None or self.new_relative is None:
            return None
        return 100 * (self.new_relative / self.old_relative - 1)


def best_cell(doc: ResultsLike, shape: str, dataset: str, budget_db: float = 0.05) -> dict[str, Any] | None:
    """The fastest cell at `shape` whose `dataset` PSNR is within `budget_db` of torch fp32: this machine's pick.

    Which engine and precision win depends on the CPU (AMX, AVX-512 BF16, AVX2), so the pick is
    made per run. Returns the cell, its p50, its PSNR change and its speed-up over the headline
    reference (None where the run has no torch-compile cell).
    """
    doc = ResultsDoc.of(doc)
    psnr = {row_label(r.data): r.psnr for r in doc.quality(dataset)}
    reference_psnr = psnr.get("torch fp32")
    if reference_psnr is None:
        return None
    timed = [r for r in doc.latency(shape) if r.p50_ms and row_label(r.data) in psnr and psnr[row_label(r.data)] >= reference_psnr - budget_db]
    if not timed:
        return None
    best = min(timed, key=lambda r: r.p50_ms)
    label = row_label(best.data)
    reference = headline_reference(doc, shape)
    return {
        "cell": label, "precision_used": best.precision_used, "p50_ms": best.p50_ms,
        "delta_db": round(psnr[label] - reference_psnr, 4), "budget_db": budget_db,
        "speedup_vs_reference": round(reference["p50_ms"] / best.p50_ms, 3) if reference else None,
        "reference": reference["cell"] if reference else None,
    }


def reference_cell(old: ResultsLike, new: ResultsLike) -> tuple[str, str] | None:
    """The cell relative changes are taken against: the new run's fastest torch-compile cell that
    both runs timed (fastest at the first shape, as the headline), else torch fp32."""
    old, new = ResultsDoc.of(old), ResultsDoc.of(new)
    both = [{(r.runtime, r.precision) for r in _latency_rows(doc, BASELINE_RUNTIME)} for doc in (old, new)]
    candidates = [r for r in _latency_rows(new, BASELINE_RUNTIME) if (r.runtime, r.precision) in both[0] & both[1]]
    if candidates:
        first_shape = candidates[0].shape
        best = min((r for r in candidates if r.shape == first_shape), key=lambda r: r.p50_ms)
        return best.runtime, best.precision
    if all(any(r.precision == FALLBACK_REFERENCE[1] for r in _latency_rows(doc, FALLBACK_REFERENCE[0])) for doc in (old, new)):
        return FALLBACK_REFERENCE
    return None


def _reference_p50(doc: ResultsDoc, reference: tuple[str, str] | None) -> dict[str, float]:
    """p50 of the reference cell per shape; empty without a reference."""
    if reference is None:
        return {}
    return {r.shape: r.p50_ms for r in doc.latency() if (r.runtime, r.precision) == reference and r.shift is None and r.p50_ms}


def latency_changes(old: ResultsLike, new: ResultsLike) -> list[LatencyChange]:
    """p50 (and min, and p50 relative to the reference cell) of every latency cell present in both runs."""
    old, new = ResultsDoc.of(old), ResultsDoc.of(new)
    before = {_key(r): r for r in old.latency()}
    reference = reference_cell(old, new)
    old_ref, new_ref = _reference_p50(old, reference), _reference_p50(new, reference)
    changes = []
    for row in new.latency():
        prev = before.get(_key(row))
        if prev is None or not prev.p50_ms:
            continue
        shape = row.shape
        relative = (prev.p50_ms / old_ref[shape], row.p50_ms / new_ref[shape]) if shape in old_ref and shape in new_ref else (None, None)
        changes.append(LatencyChange(row_label(row.data), shape, prev.p50_ms, row.p50_ms, prev.min_ms, row.min_ms, *relative))
    return changes


def host_drift_note(changes: list[LatencyChange], reference: tuple[str, str] | None) -> str | None:
    """A line for when p50 moved across the board but the ratios to the reference cell did not."""
    if reference is None:
        return None
    moved = [abs(c.change_pct) for c in changes]
    relative = [abs(v) for c in changes if (v := c.relative_change_pct) is not None and c.cell != " ".join(reference)]
    if not moved or not relative:
        return None
    p50, ratio = float(np.median(moved)), float(np.median(relative))
    if p50 <= 10 or ratio > p50 / 2:
        return None
    return (f"p50 moved by a median {p50:.0f} % but by {ratio:.0f} % relative to {' '.join(reference)} in the same run: "
            f"the machine's speed changed between the runs more than the engines did")


def setting_differences(old: ResultsLike, new: ResultsLike) -> list[str]:
    """Settings that differ between two runs and move latency by themselves: machine, versions, threads, malloc.

    A run from another machine or another thread count is not a regression baseline; saying so
    next to the table keeps a 2x "regression" from sending anyone after the wrong cause.
    """
    old, new = ResultsDoc.of(old), ResultsDoc.of(new)
    found = []
    for key in ("cpu", "cpu_id", "cores", "torch", "elan_deploy"):
        was, now = old.machine.get(key), new.machine.get(key)
        if was != now:
            found.append(f"{key} {was} -> {now}")
    settings: dict[str, Callable[[LatencyRow], object]] = {"threads": lambda r: r.threads, "allocator": lambda r: r.allocator}
    for key, setting in settings.items():
        was, now = (sorted({str(setting(r)) for r in doc.latency()}) for doc in (old, new))
        if was != now:
            found.append(f"{key} {','.join(was) or '-'} -> {','.join(now) or '-'}")
    return found


def find_regressions(old: ResultsLike, new: ResultsLike, latency_tolerance: float = 0.10, psnr_tolerance_db: float = 0.02) -> list[Regression]:
    """p50 slower by more than `latency_tolerance` (ratio), or PSNR lower by more than the tolerance."""
    old, new = ResultsDoc.of(old), ResultsDoc.of(new)
    before = {_key(r): r for r in old.rows}
    found = []
    for row in new.rows:
        prev = before.get(_key(row))  # the same kind as `row`: the kind is part of the key
        cell = f"{row.cell} {_where(row)}"
        if isinstance(row, LatencyRow) and isinstance(prev, LatencyRow) and prev.p50_ms and row.p50_ms > prev.p50_ms * (1 + latency_tolerance):
            found.append(Regression(cell, "p50 ms", prev.p50_ms, row.p50_ms))
        # Bench quality rows only: `eval` rows carry no kind and were never compared (behaviour kept).
        if isinstance(row, QualityRow) and isinstance(prev, QualityRow) and row.get("kind") and row.psnr < prev.psnr - psnr_tolerance_db:
            found.append(Regression(cell, "PSNR dB", prev.psnr, row.psnr))
    return found
