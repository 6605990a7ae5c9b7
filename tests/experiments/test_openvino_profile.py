"""The OpenVINO profile script that BENCHMARKS.md's node tables come from: its options reach the runtime."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT


def _profile(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "experiments.openvino_profile", *args], capture_output=True, text=True, timeout=600, cwd=ROOT)


@pytest.mark.slow  # profiles OpenVINO twice
def test_profile_compares_property_sets_and_lists_node_kinds(tmp_path: Path) -> None:
    """Two `--config` sets give two cells of one run; `--nodes` lists kinds whose times add up to the per-type rows."""
    pytest.importorskip("openvino")
    out = tmp_path / "profile.json"
    result = _profile("--export", "depthwise/shared/gather", "--shape", "1x3x32x48", "--precision", "f32", "--iters", "1", "--warmup", "0",
                      "--config", "default", "--config", "CPU_DENORMALS_OPTIMIZATION=YES", "--nodes", "3", "--json", str(out))
    assert result.returncode == 0, result.stderr
    cells = json.loads(out.read_text())["cells"]
    assert [c["config"] for c in cells] == ["default", "CPU_DENORMALS_OPTIMIZATION=YES"]
    assert [c["applied"] for c in cells] == [{}, {"CPU_DENORMALS_OPTIMIZATION": "True"}]  # read back from the compiled model
    assert [c["name"] for c in cells] == [f"depthwise/shared/gather [{c['config']}]" for c in cells]
    for cell in cells:
        by_layer: dict[str, float] = {}
        for kind in cell["kinds"]:
            by_layer[kind["layer"]] = by_layer.get(kind["layer"], 0.0) + kind["median_us"]
        # one timed run: the median of each kind is its time in that run, so kinds add up exactly
        assert by_layer == pytest.approx(cell["median_us"]), cell["name"]
        assert sum(k["nodes"] for k in cell["kinds"] if "_dw" in k["primitive"]) == 48
    assert result.stdout.count("| output shape | kernel | output precision | nodes | ms |") == 2


@pytest.mark.parametrize("args,named", [
    (("--export", "depthwise/shared/gather", "--config", "CPU_DENORMALS_OPTIMIZATION"), "got 'CPU_DENORMALS_OPTIMIZATION'"),
    (("--export", "depthwise/sdpa/gather@x"), "got 'depthwise/sdpa/gather@x'"),
    (("--export", "depthwise/shared/gather@99"), "opset 99 is not supported; choose 13..23"),
    (("--export", "depthwise/shared/gather", "--nodes", "-1"), "got -1"),
])
def test_profile_rejects_malformed_options_in_one_line_before_any_work(args: tuple[str, ...], named: str) -> None:
    result = _profile(*args)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].endswith(named), result.stderr


def test_profile_never_writes_its_results_over_a_model(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not read: the check comes first")
    result = _profile(str(model), "--json", str(model))
    assert result.returncode == 2 and "is one of the models to profile" in result.stderr.strip().splitlines()[-1], result.stderr
    assert model.read_bytes() == b"not read: the check comes first"
