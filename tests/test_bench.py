"""A tiny `elan-deploy bench`: one shape, few iterations, a two-image Set5 subset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from elan_deploy.bench.compare import find_regressions
from elan_deploy.cli import main
from elan_deploy.results import SCHEMA_FILE


@pytest.fixture(scope="module")
def tiny_bench(shared_data: Path, exported_onnx: Path, tmp_path_factory) -> Path:
    subset = tmp_path_factory.mktemp("set5-subset")
    for name in ("bird.png", "head.png"):
        shutil.copy(shared_data / "Set5" / "HR" / name, subset / name)
    out = tmp_path_factory.mktemp("bench")
    args = ["bench", "--runtime", "torch,onnxruntime,tensorrt", "--precision", "fp32,fp16", "--shapes", "1x3x24x40",
            "--iters", "2", "--time-budget", "0", "--dataset", str(subset), "--output", str(out), "--onnx", str(exported_onnx)]
    assert main(args) == 0
    return out


def test_results_validate_against_the_schema(tiny_bench: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    doc = json.loads((tiny_bench / "results.json").read_text())
    jsonschema.validate(doc, json.loads(SCHEMA_FILE.read_text()))
    kinds = {(r["runtime"], r["precision"], r["kind"]) for r in doc["rows"]}
    assert ("torch", "fp32", "quality") in kinds and ("onnxruntime", "fp16", "latency") in kinds
    assert ("tensorrt", "fp16", "skipped") in kinds  # listed with its reason, never dropped


def test_rows_carry_what_produced_them(tiny_bench: Path) -> None:
    doc = json.loads((tiny_bench / "results.json").read_text())
    latency = [r for r in doc["rows"] if r["kind"] == "latency"]
    assert all(r["shape"] == "1x3x24x40" and r["engine_shape"] == "1x3x32x48" for r in latency)
    assert all(r["threads"] and r["precision_used"] and r["runtime_version"] for r in latency)
    assert all(r["min_ms"] <= r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] <= r["max_ms"] for r in latency)
    quality = {(r["runtime"], r["precision"]): r for r in doc["rows"] if r["kind"] == "quality"}
    assert quality["onnxruntime", "fp32"]["fidelity_psnr"] >= 50
    assert abs(quality["onnxruntime", "fp32"]["psnr"] - quality["torch", "fp32"]["psnr"]) < 0.01
    skipped = next(r for r in doc["rows"] if r["kind"] == "skipped")
    assert "elan-deploy[tensorrt]" in skipped["reason"]


def test_report_and_pictures_are_written(tiny_bench: Path) -> None:
    report = (tiny_bench / "report.md").read_text()
    assert "onnxruntime fp16" in report and "Not run here" in report
    for picture in ("latency_vs_psnr.png", "crops.png"):
        assert (tiny_bench / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_flags_regressions(tiny_bench: Path) -> None:
    doc = json.loads((tiny_bench / "results.json").read_text())
    slower = json.loads(json.dumps(doc))
    for row in slower["rows"]:
        if row["kind"] == "latency":
            row["p50_ms"] *= 1.5
        if row["kind"] == "quality":
            row["psnr"] -= 0.1
    assert find_regressions(doc, doc) == []
    flagged = find_regressions(doc, slower)
    assert {r.what for r in flagged} == {"p50 ms", "PSNR dB"}
