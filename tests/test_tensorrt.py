"""TensorRT: what can be checked without it (error messages, profile and precision recipes),
and real builds and runs where TensorRT and an NVIDIA GPU are present.

No fake `tensorrt` module: the GPU tests skip with the exact reason `check()` gives.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from elan_deploy.errors import ElanDeployError, RuntimeUnavailable
from elan_deploy.runtimes import EngineCache, ModelSource, Precision, ShapeRange, build_engine, is_available, open_engine
from elan_deploy.runtimes.tensorrt_rt import PLAN, Recipe, TensorRTRuntime, profile_shapes, recipe_for

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture
def trt_ready() -> None:
    """Skip, with the reason check() gives, unless TensorRT and a CUDA GPU are both here."""
    reason = is_available("tensorrt")
    if reason is not None:
        pytest.skip(reason)


# --- without TensorRT --------------------------------------------------------------------------


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here")
def test_check_names_the_extra():
    with pytest.raises(RuntimeUnavailable) as info:
        TensorRTRuntime().check()
    message = str(info.value)
    assert "elan-deploy[tensorrt]" in message and "\n" not in message


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here")
def test_open_engine_surfaces_the_same_error(bundled, tmp_path):
    with pytest.raises(RuntimeUnavailable) as info:
        open_engine(ModelSource(bundled, work_dir=tmp_path), "tensorrt", "fp16", ShapeRange.parse("1x3x32x32"), cache=EngineCache(tmp_path))
    assert "elan-deploy[tensorrt]" in str(info.value)
    assert not list(tmp_path.rglob("*.onnx"))  # refused before exporting anything


def test_unsupported_precision_is_refused_before_check(bundled):
    with pytest.raises(ElanDeployError, match="does not support bf16"):
        open_engine(ModelSource(bundled), "tensorrt", "bf16")


def test_profile_shapes_static_and_range():
    assert profile_shapes(ShapeRange.parse("1x3x64x96")) == {"lr": ((1, 3, 64, 96),) * 3}
    lo, opt, hi = profile_shapes(ShapeRange.parse("1x3x16x16:2x3x192x320:4x3x512x512"))["lr"]
    assert (lo, opt, hi) == ((1, 3, 16, 16), (2, 3, 192, 320), (4, 3, 512, 512))
    assert all(isinstance(v, int) for shape in (lo, opt, hi) for v in shape)


@pytest.mark.parametrize("version", ["10.13.0", "11.1.0"])
def test_recipes_with_strong_typing(version):
    assert recipe_for(Precision.FP32, version, True) == Recipe("fp32", strongly_typed=True)
    assert recipe_for(Precision.FP16, version, True) == Recipe("fp16", strongly_typed=True)
    assert recipe_for(Precision.INT8, version, True) == Recipe("int8", strongly_typed=True)


def test_recipes_without_strong_typing():
    assert recipe_for(Precision.FP16, "8.6.1", False) == Recipe("fp32", strongly_typed=False, fp16_flag=True)
    # TensorRT 11 is always strongly typed, even if the flag ever disappears from the bindings
    assert recipe_for(Precision.FP16, "11.0.0", False) == Recipe("fp16", strongly_typed=True)
    with pytest.raises(ElanDeployError):
        recipe_for(Precision.BF16, "11.0.0", True)


# --- with TensorRT and a GPU ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpu_source(bundled, tmp_path_factory) -> ModelSource:
    return ModelSource(bundled, work_dir=tmp_path_factory.mktemp("onnx"))


def _natural_batch(shared_data, height: int, width: int) -> np.ndarray:
    from tests.conftest import natural_crop

    return natural_crop(shared_data, height, width).transpose(2, 0, 1)[None].copy()


def _reference(source: ModelSource, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return source.deploy_module()(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("precision, tolerance", [("fp32", 0.05), ("fp16", 1.5)])
def test_engine_matches_reference(trt_ready, gpu_source, shared_data, tmp_path, precision, tolerance):
    shapes = ShapeRange.parse("1x3x16x16:1x3x48x64:2x3x64x64")
    engine = open_engine(gpu_source, "tensorrt", precision, shapes, cache=EngineCache(tmp_path))
    assert engine.info.runtime == "tensorrt" and engine.info.device == "GPU"
    assert engine.info.precision_used == precision
    for height, width in [(48, 64), (32, 32)]:  # two shapes through one dynamic profile
        x = _natural_batch(shared_data, height, width)
        y = engine(x)
        assert y.shape == (1, 3, 4 * height, 4 * width) and np.isfinite(y).all()
        assert np.abs(y - _reference(gpu_source, x)).mean() < tolerance


def test_shape_outside_profile_is_a_user_error(trt_ready, gpu_source, tmp_path):
    engine = open_engine(gpu_source, "tensorrt", "fp32", ShapeRange.parse("1x3x32x32"), cache=EngineCache(tmp_path))
    with pytest.raises(ElanDeployError, match="built for shapes"):
        engine(np.zeros((1, 3, 64, 64), np.float32))


def test_corrupt_plan_is_a_clear_error(trt_ready, gpu_source, tmp_path):
    shapes = ShapeRange.parse("1x3x32x32")
    folder = build_engine(gpu_source, "tensorrt", "fp32", shapes, cache=EngineCache(tmp_path))
    assert (folder / PLAN).stat().st_size > 0
    (folder / PLAN).write_bytes(b"not a plan")
    with pytest.raises(ElanDeployError, match="could not load the engine"):
        TensorRTRuntime().load(folder, Precision.FP32, shapes, None)
