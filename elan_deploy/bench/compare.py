"""`bench --compare old.json`: flag latency and quality regressions against an earlier run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True)
class LatencyChange:
    """One latency cell in two runs: what `--compare` prints for every cell, regression or not."""

    cell: str
    shape: str
    old_p50_ms: float
    new_p50_ms: float
    old_min_ms: float | None
    new_min_ms: float | None

    @property
    def change_pct(self) -> float:
        return 100 * (self.new_p50_ms / self.old_p50_ms - 1)


def latency_changes(old: dict[str, Any], new: dict[str, Any]) -> list[LatencyChange]:
    """p50 (and min) of every latency cell present in both runs, in the new run's order."""
    before = {_key(r): r for r in old.get("rows", []) if r.get("kind") == "latency"}
    changes = []
    for row in new.get("rows", []):
        prev = before.get(_key(row))
        if row.get("kind") != "latency" or prev is None or not prev.get("p50_ms"):
            continue
        changes.append(LatencyChange(row_label(row), row["shape"], prev["p50_ms"], row["p50_ms"], prev.get("min_ms"), row.get("min_ms")))
    return changes


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
