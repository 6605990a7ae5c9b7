"""`elan-deploy info`: a missing, malformed or unreadable model is a one-line error."""

from __future__ import annotations

from pathlib import Path

import pytest

from elan_deploy.cli import main


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(tmp_path / "missing.onnx")]) == 2
    assert main(["info", str(tmp_path / "x.onnx"), "--shape", "1x3xAx4"]) == 2
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 3 and "Traceback" not in err
