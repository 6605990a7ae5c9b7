"""The README's Python session runs as written (file names aside)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from elan_deploy.results import ResultRow, write_results
from tests.helpers import ROOT

README = ROOT / "README.md"
SAMPLE = ROOT / "elan_deploy" / "calibration" / "samples" / "t25.png"


def python_api_session() -> str:
    section = README.read_text().split("## Python API", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_session_is_short_and_uses_the_public_names() -> None:
    code = python_api_session()
    lines = [line for line in code.splitlines() if line.strip()]
    assert len([line for line in lines if not line.startswith("from ")]) <= 10
    for name in ("EngineLoader", "Upscaler", "ResultsDoc", "onnx_path", '"int8"'):
        assert name in code


@pytest.mark.slow  # the INT8 engine calibrates on T91 (minutes) on a cold cache
def test_the_python_api_session_runs(tmp_path: Path, monkeypatch) -> None:
    row = dict(model="elan-light-x4", runtime="onnxruntime", precision="fp32", dataset="Set5", images=5)
    (tmp_path / "bench-out").mkdir()
    write_results(tmp_path / "bench-out" / "results.json", [
        ResultRow(**row, psnr=32.43, ssim=0.9, extra={"kind": "quality"}),
        ResultRow(**{**row, "precision": "int8"}, psnr=32.40, ssim=0.9, extra={"kind": "quality"}),
    ])
    (tmp_path / "photo.png").write_bytes(SAMPLE.read_bytes())
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(python_api_session(), "README.md", "exec"), scope)
    assert scope["onnx"].is_file()
    assert scope["engine"].info.precision.value == "int8"
    from PIL import Image

    width, height = Image.open(SAMPLE).size
    assert scope["sr"].shape == (4 * height, 4 * width, 3) and scope["sr"].dtype == np.uint8
    assert scope["best"].precision if hasattr(scope["best"], "precision") else scope["best"].get("precision") == "fp32"
