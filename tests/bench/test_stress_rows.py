"""The bench's stress rows, their place in the report, and in `--runtime auto`'s pick."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from elan_deploy.bench.default_engine import fastest_in_budget
from elan_deploy.bench.report import render_markdown
from elan_deploy.bench.stress_rows import STRESS_DATASET, StressSet, stress_fields
from elan_deploy.results import ResultRow, ResultsDoc, results_document
from tests.bench.test_default_engine import _row, bench_doc
from tests.test_stress import SCALE, nearest, speckled


def test_a_stress_row_scores_both_uses_against_the_guarded_reference() -> None:
    opened = []
    stress = StressSet(SCALE, lambda: opened.append(1) or nearest)
    held = stress_fields(stress, nearest, "fp32")
    failed = stress_fields(stress, speckled, "fp16")
    assert opened == [1]  # the reference ran once for the whole run
    assert held["images"] == failed["images"] == 12
    assert held["extra"]["stress_holds"] is True and held["extra"]["stress_fidelity_db"] == "inf"
    assert "stress_failures" not in held["extra"] and held["psnr"] > failed["psnr"]
    assert failed["extra"]["stress_holds"] is False and failed["extra"]["raw_min"] < -64
    assert any("dB from guarded fp32" in reason for reason in failed["extra"]["stress_failures"])
    assert json.loads(json.dumps(failed))["extra"] == failed["extra"]  # the row goes into results.json as it is


def _stress_row(runtime: str, precision: str, fields: dict) -> ResultRow:
    return ResultRow(model="elan-light-x4", runtime=runtime, precision=precision, dataset=STRESS_DATASET, images=fields["images"],
                     psnr=fields["psnr"], ssim=fields["ssim"], precision_used=precision,
                     extra={"kind": "quality", "guard": "guarded", "shift": "depthwise", "attention": "shared", "windows": "gather",
                            **fields["extra"]})


def test_the_report_says_which_cells_hold_and_why_the_others_do_not() -> None:
    stress = StressSet(SCALE, lambda: nearest)
    rows = [_stress_row("onnxruntime", "fp32", stress_fields(stress, nearest, "fp32")),
            _stress_row("openvino", "int8", stress_fields(stress, speckled, "int8"))]
    report = render_markdown(results_document(rows), "1x3x180x320", "Set5")
    section = report[report.index("## Stress set"):]
    assert "Holding here: onnxruntime fp32." in section
    assert "| onnxruntime fp32 | guarded |" in section and "| yes |" in section
    assert "raw output" in section.split("| openvino int8 |")[1].split("\n")[0]


def test_auto_skips_a_cell_whose_stress_outputs_are_not_finite() -> None:
    doc = bench_doc().to_json()
    doc["rows"].append(_row("ncnn", "fp32", "quality", dataset=STRESS_DATASET, psnr=29.0, raw_min=None, raw_max=None).to_json())
    doc["rows"].append(_row("onnxruntime", "fp32", "quality", dataset=STRESS_DATASET, psnr=29.5, raw_min=-45.0, raw_max=315.0).to_json())
    assert fastest_in_budget(ResultsDoc.from_json(doc)) == [("onnxruntime", "fp32")]


@pytest.mark.slow  # about 40 s on 2 cores: the paper model, the guarded reference and one engine on 12 images, twice
def test_bench_scores_the_stress_set_per_cell(shared_data: Path, exported_onnx: Path, tmp_path: Path) -> None:
    from elan_deploy.cli import main

    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(shared_data / "Set5" / "HR" / "bird.png", one / "bird.png")
    out = tmp_path / "out"
    assert main(["bench", "--runtime", "torch,onnxruntime", "--precision", "fp32", "--shapes", "1x3x16x16", "--iters", "2", "--rounds", "1",
                 "--time-budget", "0", "--dataset", str(one), "--dataset", STRESS_DATASET, "--onnx", str(exported_onnx),
                 "--output", str(out)]) == 0
    every = json.loads((out / "results.json").read_text())["rows"]
    rows = {(r["runtime"], r["guard"]): r for r in every if r["dataset"] == STRESS_DATASET}
    assert len(rows) == 2, list(rows)
    assert ("torch", "unguarded") in rows, list(rows)
    paper, guarded = rows["torch", "unguarded"], rows["onnxruntime", "guarded"]
    assert guarded["stress_holds"] and guarded["stress_fidelity_db"] > 45 and -64 <= guarded["raw_min"] < guarded["raw_max"] <= 320
    assert not paper["stress_holds"] and paper["raw_max"] > 1000 and guarded["psnr"] > paper["psnr"]
    assert "Holding here: onnxruntime fp32." in (out / "report.md").read_text()
