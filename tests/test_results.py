"""Results documents: typed rows on reading, and the same JSON back on saving."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from elan_deploy.results import LatencyRow, NotRunRow, QualityRow, ResultRow, ResultsDoc, RowKind, write_results


def _rows() -> list[ResultRow]:
    base = dict(model="elan-light-x4", runtime="openvino", precision="int8", dataset="Set5", images=5)
    return [
        ResultRow(**base, psnr=32.4, ssim=0.9, extra={"kind": "quality", "fidelity_psnr": "inf"}),
        ResultRow(**{**base, "dataset": "-", "images": 0}, extra={"kind": "latency", "shape": "1x3x64x64", "p50_ms": 12.5, "min_ms": 11.0}),
        ResultRow(**{**base, "runtime": "tensorrt", "dataset": "-", "images": 0}, extra={"kind": "skipped", "reason": "no GPU"}),
        ResultRow(**{**base, "runtime": "coreml", "dataset": "-", "images": 0}, extra={"kind": "failed", "reason": "crashed"}),
    ]


def test_rows_are_typed_by_kind(tmp_path: Path) -> None:
    write_results(tmp_path / "r.json", _rows())
    doc = ResultsDoc.load(tmp_path / "r.json")
    assert [type(r) for r in doc.rows] == [QualityRow, LatencyRow, NotRunRow, NotRunRow]
    assert [r.kind for r in doc.rows] == [RowKind.QUALITY, RowKind.LATENCY, RowKind.SKIPPED, RowKind.FAILED]
    (quality,) = doc.quality("Set5")
    assert quality.psnr == 32.4 and quality.fidelity_psnr == float("inf") and quality.cell == "openvino int8"
    assert doc.latency("1x3x64x64")[0].p50_ms == 12.5 and doc.latency("1x3x9x9") == []
    assert [r.reason for r in doc.not_run()] == ["no GPU", "crashed"]
    assert doc.machine["cores"] >= 1


def test_load_then_save_writes_the_same_document(tmp_path: Path) -> None:
    write_results(tmp_path / "r.json", _rows())
    ResultsDoc.load(tmp_path / "r.json").save(tmp_path / "again.json")
    assert json.loads((tmp_path / "again.json").read_text()) == json.loads((tmp_path / "r.json").read_text())


def test_an_eval_row_without_kind_is_a_quality_row(tmp_path: Path) -> None:
    row = ResultRow(model="m", runtime="torch", precision="fp32", dataset="Set14", images=14, psnr=28.79, ssim=0.78)
    write_results(tmp_path / "eval.json", [row])
    (read,) = ResultsDoc.load(tmp_path / "eval.json").rows
    assert isinstance(read, QualityRow) and read.dataset == "Set14" and read.fidelity_psnr is None


def test_a_document_without_rows_is_refused() -> None:
    with pytest.raises(ValueError, match="no rows"):
        ResultsDoc.from_json({"schema": "elan-deploy/results/1"})


def test_loadtest_rows_are_read_as_plain_rows_and_of_wraps_once(tmp_path: Path) -> None:
    from elan_deploy.results import Row

    row = ResultRow(model="m", runtime="openvino", precision="fp32", dataset="-", images=0, extra={"kind": "loadtest", "concurrency": 2})
    write_results(tmp_path / "load.json", [row])
    doc = ResultsDoc.load(tmp_path / "load.json")
    assert type(doc.rows[0]) is Row and doc.rows[0].kind is RowKind.LOADTEST and doc.rows[0].get("concurrency") == 2
    assert ResultsDoc.of(doc) is doc and ResultsDoc.of(doc.to_json()).to_json() == doc.to_json()
