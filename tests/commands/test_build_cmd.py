"""`elan-deploy build`: bad engine choices are one line, --no-cache leaves no engine behind, a first build is a step."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from elan_deploy.cli import main
from tests.helpers import message_lines


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--runtime", "tflite"], "unknown runtime 'tflite'"),
        (["--runtime", "onnxruntime", "--precision", "int4"], "unknown precision 'int4'"),
        (["--runtime", "onnxruntime", "--precision", "bf16"], "does not support bf16"),
        (["--runtime", "tensorrt", "--precision", "fp16"], "elan-deploy[tensorrt]"),
    ],
)
def test_bad_engine_choices_fail_with_one_line(args, needle, exported_onnx, capsys) -> None:
    code = main(["build", "--onnx", str(exported_onnx), *args])
    err = message_lines(capsys.readouterr().err)
    assert code != 0 and len(err) == 1 and needle in err[0]


def test_no_cache_leaves_no_engine_behind(tmp_path: Path, exported_onnx: Path) -> None:
    command = [sys.executable, "-m", "elan_deploy.cli", "build", "--runtime", "onnxruntime", "--shapes", "1x3x16x16",
               "--onnx", str(exported_onnx), "--no-cache"]
    done = subprocess.run(command, env={**os.environ, "TMPDIR": str(tmp_path)}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "removed on exit" in done.stdout
    assert "build onnxruntime fp32 engine (first use of these settings; cached after)" in done.stderr  # a log gets the step
    assert not list(tmp_path.glob("elan-deploy-*"))
