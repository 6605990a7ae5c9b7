"""ncnn engines: converted by PNNX from the rank4 deploy module, run through ncnn's Python bindings."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from elan_deploy.errors import ElanDeployError, RuntimeUnavailable
from elan_deploy.runtimes import EngineLoader, ShapeRange
from elan_deploy.upscale import Upscaler
from tests.helpers import natural_batch, natural_crop, one_line

pytest.importorskip("ncnn", reason="ncnn not installed: pip install 'elan-deploy[ncnn]'")
pytest.importorskip("pnnx", reason="PNNX not installed: pip install 'elan-deploy[ncnn]'")

from elan_deploy.metrics import psnr  # noqa: E402
from elan_deploy.runtimes.ncnn_rt import BUILD_INFO, WINDOWS, engine_shape  # noqa: E402

SHAPE = ShapeRange.parse("1x3x32x48")


@pytest.fixture(scope="module")
def ncnn_fp32(model_source):
    """In the session's engine cache, where test_ncnn_int8 finds the same engine instead of converting again."""
    loader = EngineLoader(model_source, "ncnn", "fp32", SHAPE, threads=2)
    return loader, loader.open()


@pytest.fixture(scope="module")
def torch_fp32(model_source):
    return EngineLoader(model_source, "torch", "fp32").open()


def test_engine_computes_the_guarded_network_on_natural_images(ncnn_fp32, torch_fp32) -> None:
    loader, engine = ncnn_fp32
    x = natural_batch(2, 32, 48)  # two images: ncnn runs one at a time
    got, expected = engine(x), torch_fp32(x)
    assert got.shape == expected.shape == (2, 3, 128, 192)
    assert np.isfinite(got).all()
    assert psnr(got, expected) > 60.0
    assert engine.info.precision_used == "fp32" and engine.info.details["windows"] == WINDOWS
    record = (loader.build() / BUILD_INFO).read_text()
    assert '"windows": "rank4"' in record and '"fidelity_db"' in record


def test_upscaler_tiles_odd_sizes_at_the_engine_shape(ncnn_fp32, torch_fp32, shared_data) -> None:
    """A 37x53 photo runs as 32x48 tiles (overlapped, reflect-padded at the border) and matches PyTorch."""
    loader, engine = ncnn_fp32
    image = natural_crop(shared_data, 37, 53)
    tiled = Upscaler(engine, 4, shapes=loader.engine_shapes)(image)
    whole = Upscaler(torch_fp32, 4, tile=None)(image)
    assert tiled.shape == whole.shape == (148, 212, 3)
    assert psnr(tiled, whole) > 45.0


def test_a_call_at_another_shape_says_how_to_get_one(ncnn_fp32) -> None:
    _, engine = ncnn_fp32
    with pytest.raises(ElanDeployError) as err:
        engine(natural_batch(1, 48, 48))
    message = one_line(err.value)
    assert "32x48" in message and "--shapes 1x3x48x48" in message


def test_engines_take_one_height_and_width() -> None:
    assert engine_shape(ShapeRange.parse("1x3x64x64:2x3x64x64:4x3x64x64")) == (1, 3, 64, 64)
    with pytest.raises(ElanDeployError, match="one H x W"):
        engine_shape(ShapeRange.parse("1x3x32x32:1x3x64x64:1x3x128x128"))


def test_a_missing_ncnn_names_the_extra(monkeypatch, model_source) -> None:
    monkeypatch.setitem(sys.modules, "ncnn", None)
    with pytest.raises(RuntimeUnavailable, match=r"pip install 'elan-deploy\[ncnn\]'"):
        EngineLoader(model_source, "ncnn", "fp32", SHAPE).open()


@pytest.mark.slow
def test_fp16_engine_stays_close_to_fp32(ncnn_fp32, model_source, tmp_path) -> None:
    _, fp32 = ncnn_fp32
    fp16 = EngineLoader(model_source, "ncnn", "fp16", SHAPE, cache_root=tmp_path).open()
    x = natural_batch(1, 32, 48)
    fidelity = psnr(fp16(x), fp32(x))
    assert fp16.info.precision_used in {"fp16", "fp16-storage+fp32-arithmetic"}
    assert math.isinf(fidelity) or fidelity > 40.0
