"""The fused window-attention micro-benchmark behind BENCHMARKS.md's stage-1 table: its kernel computes ELAN's attention."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT


@pytest.mark.slow  # compiles the C++ kernel (about 80 s on 2 cores) unless its cache has it
def test_kernel_matches_the_reference_for_every_window_size_shift_and_pair_form(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    if shutil.which("c++") is None and shutil.which("g++") is None:
        pytest.skip("no C++ compiler: the script times the PyTorch reference instead")
    out = tmp_path / "fa"
    result = subprocess.run([sys.executable, "-m", "experiments.fused_attention", "--shape", "1x3x32x48", "--rounds", "1", "--iters", "1",
                             "--out", str(out)], capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]  # 1 when any output is off the reference
    doc = json.loads((out / "fused_attention.json").read_text())
    assert doc["timed_path"] in ("avx2", "scalar") and doc["features"] == [32, 48]
    covered = {(r["ws"], r["shifted"], r["work"]) for r in doc["rows"]}
    works = {"first", "pair store f32", "pair store f16", "pair recompute"}
    assert covered == {(ws, shifted, work) for ws in (4, 8, 16) for shifted in (False, True) for work in works}
    assert all(r["kernel_ms"] > 0 and r["ov_node_ms"] > 0 for r in doc["rows"])
    assert "gate (kernel" in result.stdout
