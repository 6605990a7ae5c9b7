"""`bench --compare old.json`: flag latency and quality regressions against an earlier run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from elan_deploy.bench.matrix import row_label


@dataclass(frozen=True)
class Regression:
    cell: str
    what: str
    old: float
    new: float

    def __str__(self) -> str:
        return f"{self.cell}: {self.what} {self.old:.4g} -> {self.new:.4g}"


def _key(row: dict[str, Any]) -> tuple:
    return (row.get("kind"), row["runtime"], row["precision"], row.get("shift"), row.get("attention"), row.get("dataset"), row.get("shape"))


REFERENCE_CELLS = (("torch-compile", "bf16"), ("torch", "fp32"))  # what ratios are taken against, first present wins


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


def reference_cell(old: dict[str, Any], new: dict[str, Any]) -> tuple[str, str] | None:
    """The first of REFERENCE_CELLS with latency rows in both runs."""
    for runtime, precision in REFERENCE_CELLS:
        if all(any(r.get("kind") == "latency" and (r["runtime"], r["precision"]) == (runtime, precision) and r.get("shift") is None
                   for r in doc.get("rows", [])) for doc in (old, new)):
            return runtime, precision
    return None


def _reference_p50(doc: dict[str, Any], reference: tuple[str, str] | None) -> dict[str, float]:
    """p50 of the reference cell per shape; empty without a reference."""
    if reference is None:
        return {}
    return {r["shape"]: r["p50_ms"] for r in doc.get("rows", [])
            if r.get("kind") == "latency" and (r["runtime"], r["precision"]) == reference and r.get("shift") is None and r.get("p50_ms")}


def latency_changes(old: dict[str, Any], new: dict[str, Any]) -> list[LatencyChange]:
    """p50 (and min, and p50 relative to the reference cell) of every latency cell present in both runs."""
    before = {_key(r): r for r in old.get("rows", []) if r.get("kind") == "latency"}
    reference = reference_cell(old, new)
    old_ref, new_ref = _reference_p50(old, reference), _reference_p50(new, reference)
    changes = []
    for row in new.get("rows", []):
        prev = before.get(_key(row))
        if row.get("kind") != "latency" or prev is None or not prev.get("p50_ms"):
            continue
        shape = row["shape"]
        relative = (prev["p50_ms"] / old_ref[shape], row["p50_ms"] / new_ref[shape]) if shape in old_ref and shape in new_ref else (None, None)
        changes.append(LatencyChange(row_label(row), shape, prev["p50_ms"], row["p50_ms"], prev.get("min_ms"), row.get("min_ms"), *relative))
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


def setting_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Settings that differ between two runs and move latency by themselves: machine, versions, threads, malloc.

    A run from another machine or another thread count is not a regression baseline; saying so
    next to the table keeps a 2x "regression" from sending anyone after the wrong cause.
    """
    found = []
    for key in ("cpu", "cpu_id", "cores", "torch", "elan_deploy"):
        was, now = old.get("machine", {}).get(key), new.get("machine", {}).get(key)
        if was != now:
            found.append(f"{key} {was} -> {now}")
    for key in ("threads", "allocator"):
        was, now = (sorted({str(r.get(key)) for r in doc.get("rows", []) if r.get("kind") == "latency"}) for doc in (old, new))
        if was != now:
            found.append(f"{key} {','.join(was) or '-'} -> {','.join(now) or '-'}")
    return found


def find_regressions(old: dict[str, Any], new: dict[str, Any], latency_tolerance: float = 0.10, psnr_tolerance_db: float = 0.02) -> list[Regression]:
    """p50 slower by more than `latency_tolerance` (ratio), or PSNR lower by more than the tolerance."""
    before = {_key(r): r for r in old.get("rows", [])}
    found = []
    for row in new.get("rows", []):
        prev = before.get(_key(row))
        if prev is None:
            continue
        where = row.get("shape") if row.get("kind") == "latency" else row.get("dataset")
        cell = f"{row['runtime']} {row['precision']} {where}"
        if row.get("kind") == "latency" and prev.get("p50_ms") and row["p50_ms"] > prev["p50_ms"] * (1 + latency_tolerance):
            found.append(Regression(cell, "p50 ms", prev["p50_ms"], row["p50_ms"]))
        if row.get("kind") == "quality" and prev.get("psnr") is not None and row["psnr"] < prev["psnr"] - psnr_tolerance_db:
            found.append(Regression(cell, "PSNR dB", prev["psnr"], row["psnr"]))
    return found
