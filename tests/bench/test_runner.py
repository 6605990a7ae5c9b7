"""The bench runner's rows: what produced each measurement."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import GLIBC


def test_rows_carry_what_produced_them(tiny_bench: Path) -> None:
    doc = json.loads((tiny_bench / "results.json").read_text())
    latency = [r for r in doc["rows"] if r["kind"] == "latency"]
    assert all(r["shape"] == "1x3x24x40" and r["engine_shape"] == "1x3x32x48" for r in latency)
    assert all(r["threads"] and r["precision_used"] and r["runtime_version"] for r in latency)
    assert all(r["min_ms"] <= r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] <= r["max_ms"] for r in latency)
    assert all(r["rounds"] == 2 and r["iterations"] >= 2 and r["iterations"] % 2 == 0 for r in latency)  # rounds weigh alike
    assert all(0 <= r["engine_rss_mb"] < r["peak_rss_mb"] for r in latency)  # measured in the engine's own process
    assert all(r["allocator"] == ("keep" if GLIBC else "system (keep needs glibc)") for r in latency)
    quality = {(r["runtime"], r["precision"]): r for r in doc["rows"] if r["kind"] == "quality"}
    assert quality["onnxruntime", "fp32"]["fidelity_psnr"] >= 50
    assert abs(quality["onnxruntime", "fp32"]["psnr"] - quality["torch", "fp32"]["psnr"]) < 0.01
    skipped = next(r for r in doc["rows"] if r["kind"] == "skipped")
    assert "elan-deploy[tensorrt]" in skipped["reason"]
