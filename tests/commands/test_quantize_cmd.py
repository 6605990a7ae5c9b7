"""`elan-deploy quantize`: writes the INT8 model, and refuses a test set as calibration data."""

from __future__ import annotations

import json

from elan_deploy.calibration.data import BUNDLED_SAMPLES
from tests.helpers import message_lines


def _cli(monkeypatch, argv: list[str]) -> int:
    import elan_deploy.cli as cli

    if "quantize_cmd" not in cli.COMMAND_MODULES:  # until cli.COMMAND_MODULES lists it
        monkeypatch.setattr(cli, "COMMAND_MODULES", (*cli.COMMAND_MODULES, "quantize_cmd"))
    return cli.main(argv)


def test_quantize_cli_returns_0(exported_onnx, tmp_path, capsys, monkeypatch) -> None:
    out = tmp_path / "cli.int8.onnx"
    code = _cli(monkeypatch, [
        "quantize", "--onnx", str(exported_onnx), "--patches", "4", "--patch-size", "32", "--budget-db", "4.0",
        "--calib-dir", str(BUNDLED_SAMPLES), "--output", str(out), "--json", str(tmp_path / "r.json"), "--hard-edge-floor-db", "none",
    ])
    assert code == 0
    assert out.is_file() and (tmp_path / "r.json").is_file()
    assert "float nodes" in capsys.readouterr().out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["config"]["hard_edge_floor_db"] is None and report["hard_edge_worst_db"] is None


def test_a_floor_that_is_not_a_positive_number_is_bad_usage(exported_onnx, tmp_path, capsys, monkeypatch) -> None:
    import pytest

    for value in ("loud", "-3"):
        with pytest.raises(SystemExit) as info:
            _cli(monkeypatch, ["quantize", "--onnx", str(exported_onnx), "--hard-edge-floor-db", value, "--output", str(tmp_path / "x.onnx")])
        err = capsys.readouterr().err
        assert info.value.code == 2 and "--hard-edge-floor-db" in err and "none" in err
    assert not (tmp_path / "x.onnx").exists()


def test_test_set_as_calibration_is_refused_by_the_cli(exported_onnx, shared_data, tmp_path, capsys, monkeypatch) -> None:
    code = _cli(monkeypatch, [
        "quantize", "--onnx", str(exported_onnx), "--calib-dir", str(shared_data / "Set5" / "HR"), "--output", str(tmp_path / "x.onnx"),
    ])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(message_lines(err)) == 1 and "test set" in err
    assert not (tmp_path / "x.onnx").exists()
