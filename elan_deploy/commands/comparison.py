"""The comparison of two bench results documents as `compare` and `bench --compare` print it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from elan_deploy.bench.compare import find_regressions, host_drift_note, latency_changes, reference_cell, setting_differences
from elan_deploy.console import fmt, print_table, stderr
from elan_deploy.errors import ElanDeployError


def read_results(path: Path, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ElanDeployError(f"cannot read {what} file '{path}': {exc}; pass the results.json of a bench run") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list):
        raise ElanDeployError(f"{what} file '{path}' is not an elan-deploy results document (no rows); pass a bench results.json")
    return doc


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:+.1f} %"


def print_comparison(old: dict[str, Any], new: dict[str, Any], old_name: str) -> int:
    """Every latency cell of `new` against `old`; returns 1 on a regression, else 0."""
    changes = latency_changes(old, new)
    reference = reference_cell(old, new)
    if differences := setting_differences(old, new):
        stderr.print(f"the runs differ in {'; '.join(differences)}: latency changes may come from that, not from the code", markup=False)
    relative_header = f"change vs {' '.join(reference)}" if reference else "change vs reference"
    print_table(
        f"p50 against {old_name}", ("cell", "shape", "old p50 ms", "new p50 ms", "change", relative_header, "old min ms", "new min ms"),
        [(c.cell, c.shape, fmt(c.old_p50_ms, 1), fmt(c.new_p50_ms, 1), _pct(c.change_pct), _pct(c.relative_change_pct),
          fmt(c.old_min_ms, 1), fmt(c.new_min_ms, 1)) for c in changes],
    )
    if note := host_drift_note(changes, reference):
        stderr.print(note, markup=False)
    regressions = find_regressions(old, new)
    for r in regressions:
        stderr.print(f"regression {r}", markup=False)
    if regressions:
        return 1
    stderr.print(f"no regressions against {old_name}")
    return 0
