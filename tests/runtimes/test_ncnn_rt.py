"""ncnn engines: converted by PNNX from the rank4 deploy module into one file for any H x W, run through ncnn's Python bindings."""

from __future__ import annotations

import json
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
from elan_deploy.runtimes.ncnn_rt import BUILD_INFO, WINDOWS  # noqa: E402

# test_ncnn_int8 builds the same loader: one conversion serves both modules
SHAPE = ShapeRange.parse("1x3x16x16:1x3x32x48:2x3x64x96")


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
    record = json.loads((loader.build() / BUILD_INFO).read_text())
    assert record["windows"] == "rank4" and record["fidelity_db"] > 60.0 and record["verified_at"] == ["32x48", "16x96"]


@pytest.mark.parametrize("height, width", [(16, 96), (48, 64), (64, 32)])
def test_one_file_runs_every_size_in_its_range(ncnn_fp32, torch_fp32, height: int, width: int) -> None:
    """PNNX traced at two probe shapes; the Reshapes follow the input, so each size is the network
    at that size (shifted windows wrap at the image's own edge), not a canvas."""
    _, engine = ncnn_fp32
    x = natural_batch(1, height, width)
    got, expected = engine(x), torch_fp32(x)
    assert got.shape == expected.shape == (1, 3, 4 * height, 4 * width)
    assert psnr(got, expected) > 60.0


def test_upscaler_runs_odd_sizes_whole_or_in_tiles(ncnn_fp32, torch_fp32, shared_data) -> None:
    """A 37x53 photo: whole (padded to 48x64) it is PyTorch's picture; as 32x48 tiles of a static
    range (overlapped, reflect-padded at the border) it stays close to it."""
    loader, engine = ncnn_fp32
    image = natural_crop(shared_data, 37, 53)
    whole = Upscaler(torch_fp32, 4, tile=None)(image)
    assert psnr(Upscaler(engine, 4, tile=None)(image), whole) > 60.0
    tile = ShapeRange.parse("1x3x32x48")
    tiles = EngineLoader(loader.source, "ncnn", "fp32", tile, threads=2).load(loader.build())  # the same file, one H x W
    tiled = Upscaler(tiles, 4, shapes=tile)(image)
    assert tiled.shape == whole.shape == (148, 212, 3)
    assert psnr(tiled, whole) > 45.0


def test_a_call_outside_the_range_says_how_to_get_one(ncnn_fp32) -> None:
    _, engine = ncnn_fp32
    with pytest.raises(ElanDeployError) as err:
        engine(natural_batch(1, 16, 128))
    message = one_line(err.value)
    assert "1x3x16x16:1x3x32x48:2x3x64x96" in message and "--shapes 1x3x16x128" in message


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
