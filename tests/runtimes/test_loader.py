"""`EngineLoader`: the install hint for a missing extra, unpadded input refused, the only caller of a runtime, a first use shown as steps."""

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


def test_a_new_checkpoints_first_use_shows_its_range_calibration_and_build_as_steps(bundled, tmp_path, monkeypatch) -> None:
    """`--model PATH`: the guard's ranges are measured on T91 (minutes on a small CPU), then the
    engine is built; each shows as a step, the ranges image by image and the build's phases as
    steps of their own, and a second use shows none."""
    import shutil

    import torch

    from elan_deploy.calibration.data import BUNDLED_SAMPLES
    from elan_deploy.calibration.ranges import MEASURE_STEP
    from elan_deploy.datasets import DATA_ROOT_ENV
    from elan_deploy.model import load_model
    from elan_deploy.runtimes import ModelSource
    from tests.helpers import StepRecorder

    t91 = tmp_path / "data" / "T91"
    t91.mkdir(parents=True)
    for image in sorted(BUNDLED_SAMPLES.glob("*.png"))[:3]:
        shutil.copy(image, t91 / image.name)
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path / "data"))
    state = {k: v.clone() for k, v in bundled.model.state_dict().items()}
    state["tail.0.bias"] += 0.5  # another checkpoint: no shipped ranges
    checkpoint = tmp_path / "other.pth"
    torch.save(state, checkpoint)

    def loader() -> EngineLoader:
        source = ModelSource(load_model(str(checkpoint)), work_dir=tmp_path / "onnx")
        return EngineLoader(source, "onnxruntime", "fp32", ShapeRange.static((1, 3, 16, 16)), threads=1, cache_root=tmp_path)

    first, steps = loader(), StepRecorder()
    on_phase = first.start_first_use(steps)
    build_step = "build onnxruntime fp32 engine (first use of these settings; cached after)"
    assert steps.started == [(MEASURE_STEP, None), (build_step, None)]
    assert steps.completed == [1, 2, 3] and steps.totals[-1] == 3
    for phase in ("calibrate (entropy)", "probe 1/62 head", "probe 2/62 body.0.lfe", "check hard edges"):  # INT8's phases
        on_phase(phase)
    assert steps.started[2:] == [(f"{build_step}: calibrate (entropy)", None), (f"{build_step}: probe", 62), (f"{build_step}: check hard edges", None)]
    assert steps.completed[-2:] == [1, 2]  # a counted phase moves its count instead of starting a step per probe
    first.open(on_phase)
    again = StepRecorder()
    assert loader().start_first_use(again) is None and again.started == []
