"""Comparing two bench results: regressions, latency changes, host drift, settings, the headline cell."""

from __future__ import annotations

import json
from pathlib import Path

from elan_deploy.bench.compare import best_cell, find_regressions, headline_reference, host_drift_note, latency_changes, reference_cell, setting_differences
from elan_deploy.export.strategies import DEFAULT_WINDOWS
from tests.helpers import changed_results


def test_compare_flags_regressions(tiny_bench: Path) -> None:
    doc = json.loads((tiny_bench / "results.json").read_text())
    slower = changed_results(doc, 1.5, -0.1)
    assert find_regressions(doc, doc) == []
    flagged = find_regressions(doc, slower)
    assert {r.what for r in flagged} == {"p50 ms", "PSNR dB"}


def test_compare_lists_every_latency_change(tiny_bench: Path) -> None:
    doc = json.loads((tiny_bench / "results.json").read_text())
    slower = changed_results(doc, 1.05)
    changes = latency_changes(doc, slower)
    assert len(changes) == sum(r["kind"] == "latency" for r in doc["rows"])
    assert all(abs(c.change_pct - 5.0) < 1e-6 for c in changes)
    assert find_regressions(doc, slower) == []  # within the 10 % tolerance


def test_compare_tells_a_slower_machine_from_a_slower_engine(tiny_bench: Path) -> None:
    doc = json.loads((tiny_bench / "results.json").read_text())
    reference = reference_cell(doc, doc)
    assert reference == ("torch", "fp32")  # the tiny bench has no torch.compile row to prefer
    host_slower = latency_changes(doc, changed_results(doc, 1.5))
    assert all(abs(c.change_pct - 50) < 1e-6 and abs(c.relative_change_pct) < 1e-6 for c in host_slower)
    assert "machine's speed changed" in host_drift_note(host_slower, reference)
    engine_slower = json.loads(json.dumps(doc))
    for row in engine_slower["rows"]:
        if row["kind"] == "latency" and row["runtime"] == "onnxruntime":
            row["p50_ms"] *= 1.5
    changes = {c.cell: c for c in latency_changes(doc, engine_slower)}
    assert abs(changes["onnxruntime fp32"].relative_change_pct - 50) < 1e-6
    assert abs(changes["torch fp32"].relative_change_pct) < 1e-6
    assert host_drift_note(list(changes.values()), reference) is None


def test_compare_names_settings_that_move_latency_by_themselves(tiny_bench: Path) -> None:
    doc = json.loads((tiny_bench / "results.json").read_text())
    assert setting_differences(doc, doc) == []
    other = json.loads(json.dumps(doc))
    other["machine"]["cpu"] = "another CPU"
    for row in other["rows"]:
        if row["kind"] == "latency":
            row["threads"], row["allocator"] = 1, "system"
    differences = setting_differences(doc, other)
    assert [d.split()[0] for d in differences] == ["cpu", "threads", "allocator"]
    assert differences[2].endswith("keep -> system") or "glibc" in differences[2]


def test_the_headline_ratio_is_against_the_fastest_torch_compile_cell() -> None:
    def strategy(runtime: str) -> dict:  # what the runner records for an engine row
        return {} if runtime.startswith("torch") else {"shift": "depthwise", "attention": "shared", "windows": DEFAULT_WINDOWS}

    def latency(runtime: str, precision: str, p50: float, shape: str = "1x3x180x320") -> dict:
        return {"kind": "latency", "runtime": runtime, "precision": precision, "shape": shape, "p50_ms": p50} | strategy(runtime)

    doc = {"rows": [latency("torch", "fp32", 2000.0), latency("torch-compile", "fp32", 900.0), latency("torch-compile", "bf16", 1200.0),
                    latency("torch-compile", "bf16", 10.0, "1x3x64x64")]}
    assert headline_reference(doc, "1x3x180x320") == {
        "cell": "torch-compile fp32", "runtime": "torch-compile", "precision": "fp32", "shape": "1x3x180x320", "p50_ms": 900.0}
    assert reference_cell(doc, doc) == ("torch-compile", "fp32")
    quality = [{"kind": "quality", "runtime": r, "precision": p, "dataset": "Set5", "psnr": v} | strategy(r)
               for r, p, v in (("torch", "fp32", 32.44), ("openvino", "int8", 32.40), ("openvino", "bf16", 32.43))]
    doc["rows"] += quality + [latency("openvino", "int8", 300.0), latency("openvino", "bf16", 450.0)]
    best = best_cell(doc, "1x3x180x320", "Set5")
    assert best["cell"] == "openvino int8" and best["speedup_vs_reference"] == 3.0 and best["reference"] == "torch-compile fp32"
    assert best_cell(doc, "1x3x180x320", "Set5", budget_db=0.02)["cell"] == "openvino bf16"  # int8 is 0.04 dB down
    doc["rows"] = doc["rows"][:1]
    assert headline_reference(doc, "1x3x180x320") is None and reference_cell(doc, doc) == ("torch", "fp32")
