"""`EngineLoader`: the install hint for a missing extra, unpadded input refused, the only caller of a runtime."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import elan_deploy
from elan_deploy.errors import ElanDeployError, RuntimeUnavailable
from elan_deploy.runtimes import EngineLoader, ShapeRange


def test_missing_extra_names_the_install_hint(model_source, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if the package were not installed
    with pytest.raises(RuntimeUnavailable, match=r"pip install 'elan-deploy\[openvino\]'"):
        EngineLoader(model_source, "openvino", "fp32").open()


def test_engine_rejects_unpadded_input(model_source) -> None:
    engine = EngineLoader(model_source, "onnxruntime", "fp32", ShapeRange.parse("1x3x16x16:1x3x32x32:1x3x64x64")).open()
    with pytest.raises(ElanDeployError, match="multiples of 16"):
        engine(np.zeros((1, 3, 20, 32), np.float32))


def test_the_loader_is_the_only_caller_of_a_runtime() -> None:
    """Only runtimes/ asks for a runtime object; every other package goes through EngineLoader."""
    root = Path(elan_deploy.__file__).parent
    callers = [p.relative_to(root).as_posix() for p in root.rglob("*.py") if "get_runtime(" in p.read_text() and p.parent.name != "runtimes"]
    assert callers == []


def test_a_pickled_loader_opens_the_engine_the_driver_built(model_source, tmp_path) -> None:
    """Bench workers and Ray actors get the loader pickled: it finds the driver's cached engine and computes the same."""
    import pickle

    loader = EngineLoader(model_source, "onnxruntime", "fp32", ShapeRange.static((1, 3, 32, 32)), threads=1, cache_root=tmp_path)
    folder = loader.build()
    again = pickle.loads(pickle.dumps(loader))
    assert again.build() == folder  # found in the cache, not built again
    x = np.linspace(0, 255, 3 * 32 * 32, dtype=np.float32).reshape(1, 3, 32, 32)
    assert np.array_equal(again.open()(x), loader.open()(x))


def test_a_runtime_without_an_engine_file_has_nothing_to_build(model_source) -> None:
    loader = EngineLoader(model_source, "torch", "fp32")
    assert not loader.needs_build
    with pytest.raises(ElanDeployError, match="no engine to build"):
        loader.build()
    assert loader.open().info.runtime == "torch"
