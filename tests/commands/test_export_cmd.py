"""`elan-deploy export` then `info` on its file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from elan_deploy.cli import main

TOL = 1e-3  # the export's own ORT check (absolute, 0..255 scale), read back from its report


def test_cli_export_and_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "sub" / "model.onnx"
    argv = ["export", "--shift", "slice", "--attention", "sdpa", "--static-batch", "--output", str(output), "--json", str(tmp_path / "export.json")]
    assert main(argv) == 0
    assert output.is_file()
    record = json.loads((tmp_path / "export.json").read_text())
    assert record["max_abs_error"] < TOL and record["metadata"]["shift"] == "slice"
    capsys.readouterr()

    assert main(["info", str(output), "--shape", "1x3x192x320", "--json", str(tmp_path / "info.json")]) == 0
    printed = capsys.readouterr().out
    assert "Slice" in printed and "elan-light-x4" in printed
    info = json.loads((tmp_path / "info.json").read_text())
    assert info["rank_check"]["max_rank"] <= 5 and info["rank_check"]["within_limit"]
    assert info["default_domain_only"] and info["metadata"]["attention"] == "sdpa"
    assert info["inputs"][0]["shape"] == [1, 3, "H", "W"]  # --static-batch

    assert main(["info", str(output), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rank_check"]["input_shape"] == [1, 3, 192, 320]
