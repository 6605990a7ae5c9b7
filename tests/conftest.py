"""Shared fixtures: the read-only benchmark data in ../shared, the bundled model, its export and a tiny bench run.

The plain helper functions are in tests/helpers.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers import SHARED_DATA


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "Set5").is_dir():
        pytest.skip(f"benchmark data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def bundled():
    from elan_deploy.model import load_bundled

    return load_bundled()


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Engines and exports built by tests go to a throwaway cache, never the user's; commands that
    default to `--runtime auto` run ONNX Runtime FP32, which the suite builds anyway, unless a test
    unsets $ELAN_DEPLOY_ENGINE to check the pick itself (`tests/bench/test_default_engine.py`)."""
    import os

    from elan_deploy.bench.default_engine import ENGINE_ENV

    root = tmp_path_factory.mktemp("engine-cache")
    saved = {name: os.environ.get(name) for name in ("ELAN_DEPLOY_CACHE", ENGINE_ENV)}
    os.environ["ELAN_DEPLOY_CACHE"] = str(root / "engines")
    os.environ[ENGINE_ENV] = "onnxruntime:fp32"
    yield root
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def exported_onnx(bundled, tmp_path_factory) -> Path:
    """The bundled model exported once as `elan-deploy export` writes it by default (range-guarded)."""
    from elan_deploy.calibration.ranges import calibrated_guard
    from elan_deploy.export import ExportConfig, export_onnx

    path = tmp_path_factory.mktemp("onnx") / "elan-light-x4.fp32.onnx"
    export_onnx(bundled, path, ExportConfig(), guard=calibrated_guard(bundled))
    return path


@pytest.fixture(scope="session")
def model_source(bundled, exported_onnx):
    from elan_deploy.runtimes import ModelSource

    return ModelSource(bundled, onnx=exported_onnx)


@pytest.fixture(scope="session")  # read by the bench, compare and report tests alike
def tiny_bench(shared_data: Path, exported_onnx: Path, tmp_path_factory) -> Path:
    """A tiny `elan-deploy bench`: one shape, few iterations, a two-image Set5 subset."""
    from elan_deploy.cli import main

    subset = tmp_path_factory.mktemp("set5-subset")
    for name in ("bird.png", "head.png"):
        shutil.copy(shared_data / "Set5" / "HR" / name, subset / name)
    out = tmp_path_factory.mktemp("bench")
    args = ["bench", "--runtime", "torch,onnxruntime,tensorrt", "--precision", "fp32,fp16", "--shapes", "1x3x24x40",
            "--iters", "2", "--rounds", "2", "--time-budget", "0", "--dataset", str(subset), "--output", str(out), "--onnx", str(exported_onnx)]
    assert main(args) == 0
    return out
