"""The bench report: what report.md says, its pictures, and an unsteady machine called out."""

from __future__ import annotations

import json
from pathlib import Path

from elan_deploy.bench.report import unsteady_machine_warning
from tests.helpers import GLIBC


def test_report_and_pictures_are_written(tiny_bench: Path) -> None:
    report = (tiny_bench / "report.md").read_text()
    assert "onnxruntime fp16" in report and "Not run here" in report
    assert "Latency workers' malloc: keep" in report or not GLIBC
    for picture in ("latency_vs_psnr.png", "crops.png"):
        assert (tiny_bench / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_busy_or_unsteady_machine_is_called_out(tiny_bench: Path) -> None:
    doc = json.loads((tiny_bench / "results.json").read_text())
    if Path("/proc/stat").exists():
        assert all("other_cpu_pct" in r for r in doc["rows"] if r["kind"] == "latency")
    quiet = json.loads(json.dumps(doc))
    latency = [r for r in quiet["rows"] if r["kind"] == "latency"]
    for row in latency:
        row.update(other_cpu_pct=0.0, steal_pct=0.0, round_spread_pct=5.0)
    assert unsteady_machine_warning(quiet) is None
    for row in latency:
        row["round_spread_pct"] = 60.0
    assert "between rounds" in unsteady_machine_warning(quiet)
    latency[0]["other_cpu_pct"] = 40.0
    assert "busy" in unsteady_machine_warning(quiet)
