"""TensorRT: what can be checked without it (error messages, profile and precision recipes,
the ONNX each recipe hands to Polygraphy's loaders, the loader chain up to where TensorRT is
imported), and real builds and runs where TensorRT and an NVIDIA GPU are present.

No fake `tensorrt` module: the GPU tests skip with the exact reason `check()` gives.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from elan_deploy.errors import ElanDeployError, RuntimeUnavailable
from elan_deploy.runtimes import EngineLoader, ModelSource, Precision, ShapeRange, is_available
from elan_deploy.runtimes.tensorrt_rt import (
    PLAN,
    Recipe,
    TensorRTRuntime,
    build_loaders,
    build_plan,
    onnx_for,
    profile_for,
    profile_shapes,
    recipe_for,
    strongly_typed_flag,
)

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
def test_opening_the_engine_surfaces_the_same_error(bundled, tmp_path):
    with pytest.raises(RuntimeUnavailable) as info:
        EngineLoader(ModelSource(bundled, work_dir=tmp_path), "tensorrt", "fp16", ShapeRange.parse("1x3x32x32"), cache_root=tmp_path).open()
    assert "elan-deploy[tensorrt]" in str(info.value)
    assert not list(tmp_path.rglob("*.onnx"))  # refused before exporting anything


def test_unsupported_precision_is_refused_before_check(bundled):
    with pytest.raises(ElanDeployError, match="does not support bf16"):
        EngineLoader(ModelSource(bundled), "tensorrt", "bf16").open()


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


# --- the Polygraphy loader chain, up to where TensorRT is needed -----------------------------------


def test_profile_for_is_the_shape_range_as_a_polygraphy_profile():
    from polygraphy.backend.trt import Profile

    profile = profile_for(ShapeRange.parse("1x3x16x16:2x3x192x320:4x3x512x512"))
    assert isinstance(profile, Profile) and list(profile.keys()) == ["lr"]
    assert (profile["lr"].min, profile["lr"].opt, profile["lr"].max) == ((1, 3, 16, 16), (2, 3, 192, 320), (4, 3, 512, 512))
    static = profile_for(ShapeRange.parse("1x3x64x96"))["lr"]
    assert static.min == static.opt == static.max == (1, 3, 64, 96)


@pytest.mark.parametrize(
    "recipe, has_flag, typed, fp16",
    [
        (Recipe("fp32", strongly_typed=True), True, True, False),
        (Recipe("fp16", strongly_typed=True), True, True, False),
        (Recipe("int8", strongly_typed=True), True, True, False),
        (Recipe("fp16", strongly_typed=True), False, False, False),  # TensorRT 11 without the flag: typed anyway
        (Recipe("fp32", strongly_typed=False, fp16_flag=True), True, False, True),  # TensorRT < 9
    ],
)
def test_loader_chain(tmp_path, recipe, has_flag, typed, fp16):
    from polygraphy.backend.trt import CreateConfig, EngineFromNetwork, NetworkFromOnnxPath, SaveEngine

    onnx_file, plan, cache = tmp_path / "model.onnx", tmp_path / "model.plan", tmp_path / "timing.cache"
    shapes = ShapeRange.parse("1x3x16x16:1x3x48x64:2x3x64x64")
    save = build_loaders(onnx_file, recipe, shapes, plan, cache, has_typed_flag=has_flag)
    assert isinstance(save, SaveEngine) and save.path == str(plan)
    engine = save._engine
    assert isinstance(engine, EngineFromNetwork) and engine.timing_cache_path == str(cache)
    network, config = engine._network, engine._config
    assert isinstance(network, NetworkFromOnnxPath) and network.path == str(onnx_file)
    assert network.strongly_typed is typed == strongly_typed_flag(recipe, has_flag)
    assert isinstance(config, CreateConfig)
    assert config.tf32 is False and config.fp16 is fp16 and config.int8 is False and config.calibrator is None
    as_tuples = lambda profile: {name: (s.min, s.opt, s.max) for name, s in profile.items()}  # noqa: E731
    assert [as_tuples(p) for p in config.profiles] == [{"lr": ((1, 3, 16, 16), (1, 3, 48, 64), (2, 3, 64, 64))}]
    assert config.timing_cache_path is None  # no shared cache given
    assert not list(tmp_path.iterdir())  # composing the chain builds nothing


def test_shared_timing_cache_seeds_the_config_only_when_it_exists(tmp_path):
    shared = tmp_path / "shared.cache"
    args = (tmp_path / "m.onnx", Recipe("fp32", True), ShapeRange.parse("1x3x32x32"), tmp_path / "p.plan", tmp_path / "t.cache")
    assert build_loaders(*args, shared_cache=shared)._engine._config.timing_cache_path is None
    shared.write_bytes(b"cache")
    assert build_loaders(*args, shared_cache=shared)._engine._config.timing_cache_path == str(shared)


def test_fp32_recipe_hands_the_export_to_the_loader(model_source, tmp_path):
    path = onnx_for(Recipe("fp32", strongly_typed=True), model_source, tmp_path)
    assert path == Path(model_source.onnx_path())
    assert not list(tmp_path.iterdir())


def test_fp16_recipe_hands_a_typed_fp16_onnx_with_fp32_attention(model_source, tmp_path):
    import onnx

    from elan_deploy.calibration.fp16 import fp16_tensors_between

    path = onnx_for(Recipe("fp16", strongly_typed=True), model_source, tmp_path)
    assert path.parent == tmp_path and path.is_file()  # an input of this build only
    model = onnx.load(str(path))
    weights = {t.name: t.data_type for t in model.graph.initializer}
    conv_weights = [weights[n.input[1]] for n in model.graph.node if n.op_type == "Conv" and n.input[1] in weights]
    assert conv_weights and all(t == onnx.TensorProto.FLOAT16 for t in conv_weights)
    assert fp16_tensors_between(model) == []  # logits MatMul -> Softmax stays FP32
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # FP32 I/O
    assert build_loaders(path, Recipe("fp16", True), ShapeRange.parse("1x3x32x32"), tmp_path / "p", tmp_path / "c")._engine._network.path == str(path)


def test_int8_recipe_hands_the_shared_qdq_onnx(model_source, tmp_path):
    import onnx

    from elan_deploy.calibration.data import BUNDLED_SAMPLES
    from elan_deploy.calibration.int8 import QuantizeConfig, int8_onnx_for

    # test_int8's quick recipe on the bundled images: the same Q/DQ file when both run in one session
    fast = QuantizeConfig(patches=6, patch_size=32, heldout_size=32, budget_db=4.0, hard_edge_floor_db=None)
    path = onnx_for(Recipe("int8", strongly_typed=True), model_source, tmp_path, int8_config=fast, int8_calib_dir=BUNDLED_SAMPLES)
    assert path == int8_onnx_for(model_source, fast, BUNDLED_SAMPLES)  # the file ONNX Runtime and OpenVINO get
    ops = {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed here")
def test_building_needs_tensorrt_and_says_so(model_source, tmp_path):
    with pytest.raises(RuntimeUnavailable, match=r"elan-deploy\[tensorrt\]"):
        build_plan(Path(model_source.onnx_path()), Recipe("fp32", True), ShapeRange.parse("1x3x32x32"), tmp_path, None)
    assert not list(tmp_path.iterdir())


# --- with TensorRT and a GPU ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpu_source(bundled, tmp_path_factory) -> ModelSource:
    return ModelSource(bundled, work_dir=tmp_path_factory.mktemp("onnx"))


def _natural_batch(shared_data, height: int, width: int) -> np.ndarray:
    from tests.helpers import natural_crop

    return natural_crop(shared_data, height, width).transpose(2, 0, 1)[None].copy()


def _reference(source: ModelSource, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return source.deploy_module()(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("precision, tolerance", [("fp32", 0.05), ("fp16", 1.5)])
def test_engine_matches_reference(trt_ready, gpu_source, shared_data, tmp_path, precision, tolerance):
    shapes = ShapeRange.parse("1x3x16x16:1x3x48x64:2x3x64x64")
    engine = EngineLoader(gpu_source, "tensorrt", precision, shapes, cache_root=tmp_path).open()
    assert engine.info.runtime == "tensorrt" and engine.info.device == "GPU"
    assert engine.info.precision_used == precision
    for height, width in [(48, 64), (32, 32)]:  # two shapes through one dynamic profile
        x = _natural_batch(shared_data, height, width)
        y = engine(x)
        assert y.shape == (1, 3, 4 * height, 4 * width) and np.isfinite(y).all()
        assert np.abs(y - _reference(gpu_source, x)).mean() < tolerance


def test_shape_outside_profile_is_a_user_error(trt_ready, gpu_source, tmp_path):
    engine = EngineLoader(gpu_source, "tensorrt", "fp32", ShapeRange.parse("1x3x32x32"), cache_root=tmp_path).open()
    with pytest.raises(ElanDeployError, match="built for shapes"):
        engine(np.zeros((1, 3, 64, 64), np.float32))


def test_corrupt_plan_is_a_clear_error(trt_ready, gpu_source, tmp_path):
    shapes = ShapeRange.parse("1x3x32x32")
    folder = EngineLoader(gpu_source, "tensorrt", "fp32", shapes, cache_root=tmp_path).build()
    assert (folder / PLAN).stat().st_size > 0
    (folder / PLAN).write_bytes(b"not a plan")
    with pytest.raises(ElanDeployError, match="could not load the engine"):
        TensorRTRuntime().load(folder, Precision.FP32, shapes, None)
