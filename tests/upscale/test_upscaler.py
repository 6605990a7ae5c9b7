"""The Upscaler: sizes, tiling seams, the bounded-memory uint8 path, NaN/Inf outputs, memory
checks before compute, grayscale. The same images through `elan-deploy upscale`: tests/commands/test_upscale_cmd.py.

Geometry and memory are checked exactly and fast with a real ONNX Runtime engine running a tiny
graph (nearest-neighbour x4, pointwise, so a correct tiling reproduces `np.repeat` bit for bit);
the network's own behaviour with the bundled ELAN-light engine.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from elan_deploy.errors import ElanDeployError, NonFiniteOutput
from elan_deploy.imaging import read_image, to_uint8
from elan_deploy.runtimes import BuildOptions, EngineLoader, Precision, ShapeRange
from elan_deploy.runtimes.onnxruntime_rt import OnnxRuntimeEngine
from elan_deploy.upscale import (
    BYTES_PER_LR_PIXEL,
    DEFAULT_OVERLAP,
    MAX_MEMORY_ENV,
    Upscaler,
    available_memory,
)
from tests.helpers import natural_crop, photo_crop

GiB = 2**30


@pytest.fixture(scope="module")
def ort_engine(model_source):
    return EngineLoader(model_source, "onnxruntime", "fp32", ShapeRange.parse("1x3x16x16:1x3x192x320:4x3x512x512")).open()


def _tiny_model(path: Path, fp16_gain: float | None = None) -> Path:
    """x4 nearest-neighbour upscaling as an ONNX graph; with `fp16_gain`, multiplied by the gain
    and passed through an fp16 tensor (Cast to fp16 and back), so bright pixels overflow fp16
    (65504) into Inf as in a real fp16 engine."""
    x = helper.make_tensor_value_info("lr", TensorProto.FLOAT, ["n", 3, "h", "w"])
    y = helper.make_tensor_value_info("sr", TensorProto.FLOAT, ["n", 3, "sh", "sw"])
    inits = [helper.make_tensor("scales", TensorProto.FLOAT, [4], [1.0, 1.0, 4.0, 4.0])]
    nodes = [helper.make_node("Resize", ["lr", "", "scales"], ["sr" if fp16_gain is None else "up"], mode="nearest")]
    if fp16_gain is not None:
        inits.append(helper.make_tensor("gain", TensorProto.FLOAT, [], [fp16_gain]))
        nodes += [
            helper.make_node("Mul", ["up", "gain"], ["big"]),
            helper.make_node("Cast", ["big"], ["big16"], to=TensorProto.FLOAT16),
            helper.make_node("Cast", ["big16"], ["sr"], to=TensorProto.FLOAT),
        ]
    graph = helper.make_graph(nodes, "tiny", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def nearest_engine(tmp_path_factory) -> OnnxRuntimeEngine:
    path = _tiny_model(tmp_path_factory.mktemp("tiny") / "nearest.onnx")
    return OnnxRuntimeEngine(path, Precision.FP32, BuildOptions(threads=1))


@pytest.fixture(scope="module")
def overflowing_fp16_engine(tmp_path_factory) -> OnnxRuntimeEngine:
    path = _tiny_model(tmp_path_factory.mktemp("tiny") / "overflow16.onnx", fp16_gain=1000.0)
    return OnnxRuntimeEngine(path, Precision.FP16, BuildOptions(threads=1))


class CountingEngine:
    """The real engine, counting its calls (to prove a check ran before any compute)."""

    def __init__(self, engine) -> None:
        self.engine, self.info, self.calls = engine, engine.info, 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        return self.engine(x)


@pytest.mark.parametrize(
    ("height", "width", "tile", "overlap", "batch"),
    [(97, 131, 32, None, 1), (70, 90, 48, 16, 3), (13, 9, 16, None, 1), (200, 37, 64, 48, 2), (50, 60, None, None, 1)],
)
def test_stitching_is_exact_for_a_pointwise_engine(nearest_engine, shared_data, height, width, tile, overlap, batch) -> None:
    """Every output pixel comes from the right tile and none from the padding: with a pointwise
    x4 engine, any tiling must reproduce nearest-neighbour upscaling exactly."""
    image = photo_crop(shared_data, height, width)
    expected = image.repeat(4, axis=0).repeat(4, axis=1)
    upscaler = Upscaler(nearest_engine, 4, tile=tile, overlap=overlap, batch=batch)
    assert np.array_equal(upscaler.upscale_uint8(image), expected)
    assert np.array_equal(upscaler(image), expected.astype(np.float32))


@pytest.mark.parametrize(("height", "width"), [(97, 131), (13, 9), (16, 16)])
def test_any_size_gives_scale_times_size(ort_engine, shared_data, height, width) -> None:
    image = natural_crop(shared_data, height, width, "B100/HR/img_010.png", top=20, left=30)
    assert Upscaler(ort_engine, 4)(image).shape == (4 * height, 4 * width, 3)


def test_tiled_matches_untiled(ort_engine, shared_data) -> None:
    image = natural_crop(shared_data, 200, 300, "B100/HR/img_001.png", top=0, left=0)
    untiled = Upscaler(ort_engine, 4, tile=None).upscale_uint8(image).astype(int)
    tiled = Upscaler(ort_engine, 4, tile=128, overlap=64, batch=2).upscale_uint8(image).astype(int)
    within_one = (np.abs(tiled - untiled) <= 1).mean()  # seams: whole grey levels, any ISA
    assert within_one >= 0.999, within_one


def test_static_engine_tiles_at_its_shape(model_source, shared_data) -> None:
    shapes = ShapeRange.parse("2x3x64x64")
    engine = EngineLoader(model_source, "onnxruntime", "fp32", shapes).open()
    image = natural_crop(shared_data, 70, 90)
    assert Upscaler(engine, 4, shapes=shapes)(image).shape == (280, 360, 3)


def test_uint8_path_equals_the_float_path_rounded(ort_engine, shared_data) -> None:
    """`upscale_uint8` rounds tile by tile into uint8: the same pixels as rounding the float
    output of `__call__` (the same engine calls), for RGB and grayscale, uint8 or float input."""
    image = photo_crop(shared_data, 60, 75)
    upscaler = Upscaler(ort_engine, 4, tile=32, batch=2)
    as_float = upscaler(image)
    assert as_float.dtype == np.float32 and as_float.shape == (240, 300, 3)
    assert np.array_equal(upscaler.upscale_uint8(image), to_uint8(as_float))
    assert np.array_equal(upscaler.upscale_uint8(image.astype(np.float32)), to_uint8(as_float))
    gray = image[:, :, 1]
    gray_float = upscaler(gray)
    assert gray_float.shape == (240, 300)
    assert np.array_equal(upscaler.upscale_uint8(gray), to_uint8(gray_float))


def test_uint8_path_memory_is_the_output_plus_one_tile(nearest_engine, shared_data) -> None:
    """Peak numpy memory of `upscale_uint8` is the uint8 output plus a tile-sized working set:
    four times the image gives four times the output and about the same working set. (The
    float path of old held a float32 output and its round/clip temporaries: >= 11x the uint8
    output on top of it.)"""
    base = photo_crop(shared_data, 150, 200)
    tile_floats = 3 * (4 * 128) ** 2 * 4  # one float32 engine output of a 128x128 tile
    working, outputs = [], []
    for reps in (2, 4):
        image = np.ascontiguousarray(np.tile(base, (reps, reps, 1)))
        tracemalloc.start()
        out = Upscaler(nearest_engine, 4, tile=128, overlap=32).upscale_uint8(image)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert out.nbytes == image.nbytes * 16
        working.append(peak - out.nbytes)
        outputs.append(out.nbytes)
        # engine output + one rounding temporary + the padded input (float tiles are small)
        assert working[-1] < 2 * tile_floats + 2 * image.nbytes, (reps, peak, out.nbytes)
    assert working[1] - working[0] < 0.25 * (outputs[1] - outputs[0]), (working, outputs)


def test_nonfinite_engine_output_is_an_error_naming_the_engine(overflowing_fp16_engine, shared_data) -> None:
    """A real fp16 graph overflowing into Inf stops the upscale with a one-line error naming
    the runtime and the precision and suggesting fp32/bf16: no picture is made from it."""
    image = photo_crop(shared_data, 40, 50)
    assert image.max() * 1000.0 > 65504  # bright pixels overflow fp16
    for run in (Upscaler(overflowing_fp16_engine, 4, tile=32).upscale_uint8, Upscaler(overflowing_fp16_engine, 4, tile=None)):
        with pytest.raises(NonFiniteOutput) as info:
            run(image)
        message = str(info.value)
        assert "\n" not in message
        assert "onnxruntime fp16 engine" in message and "precision used: fp16" in message
        assert "fp32 or bf16" in message and "NaN/Inf" in message


def test_dark_input_through_the_same_engine_is_finite(overflowing_fp16_engine, shared_data) -> None:
    """The check is about values, not the engine: where fp16 does not overflow, it passes."""
    dark = (photo_crop(shared_data, 40, 50) // 8).astype(np.uint8)  # <= 31: x1000 stays under 65504
    out = Upscaler(overflowing_fp16_engine, 4, tile=32).upscale_uint8(dark)
    expected = np.clip(dark * 1000.0, 0, 255).astype(np.uint8).repeat(4, axis=0).repeat(4, axis=1)
    assert np.array_equal(out, expected)


def test_small_tile_needs_no_overlap_flag(nearest_engine, shared_data) -> None:
    """`--tile 16` alone works: the default overlap shrinks to fit; an explicit one is checked."""
    upscaler = Upscaler(nearest_engine, 4, tile=16)
    assert upscaler.overlap == 8
    image = photo_crop(shared_data, 40, 50)
    assert np.array_equal(upscaler.upscale_uint8(image), image.repeat(4, 0).repeat(4, 1))
    assert Upscaler(nearest_engine, 4, tile=256).overlap == DEFAULT_OVERLAP
    with pytest.raises(ElanDeployError, match=r"overlap 64 must be smaller than the tile \(16\); pass --overlap 8"):
        Upscaler(nearest_engine, 4, tile=16, overlap=64)
    with pytest.raises(ElanDeployError, match="overlap -1"):
        Upscaler(nearest_engine, 4, tile=64, overlap=-1)
    with pytest.raises(ElanDeployError, match="multiple of 16"):
        Upscaler(nearest_engine, 4, tile=0)


@pytest.mark.parametrize("tile", [None, 1024])
def test_tile_too_large_fails_before_compute(ort_engine, tile) -> None:
    """A whole-image run (`--tile 0`) or a huge tile on 2000x1500 cannot fit in 1 GiB: refused
    with one line suggesting a tile that does, before any engine call."""
    image = np.zeros((1500, 2000, 3), np.uint8)
    engine = CountingEngine(ort_engine)
    upscaler = Upscaler(engine, 4, tile=tile, memory_limit=GiB)
    with pytest.raises(ElanDeployError) as info:
        upscaler.upscale_uint8(image)
    message = str(info.value)
    assert engine.calls == 0 and "\n" not in message
    suggested = int(message.split("--tile ")[1].split()[0])
    assert 16 <= suggested <= 1024 and suggested % 16 == 0
    Upscaler(engine, 4, tile=suggested, memory_limit=GiB).check_fits(1500, 2000)  # what it says fits
    with pytest.raises(ElanDeployError):
        Upscaler(engine, 4, tile=suggested + 16, memory_limit=GiB).check_fits(1500, 2000)  # and is the largest
    assert suggested * suggested * BYTES_PER_LR_PIXEL < GiB


def test_output_too_large_for_memory_says_so(nearest_engine) -> None:
    with pytest.raises(ElanDeployError, match="output of a 12000x12000 image needs"):
        Upscaler(nearest_engine, 4, memory_limit=4 * GiB).check_fits(12000, 12000)


def test_memory_limit_from_the_environment(nearest_engine, monkeypatch) -> None:
    monkeypatch.setenv(MAX_MEMORY_ENV, "1G")
    assert available_memory() < GiB
    with pytest.raises(ElanDeployError, match=r"--tile \d+"):
        Upscaler(nearest_engine, 4, tile=None).check_fits(1500, 2000)
    Upscaler(nearest_engine, 4).check_fits(540, 960)  # the default tile fits a 4K output in 1 GiB
    monkeypatch.setenv(MAX_MEMORY_ENV, "lots")
    with pytest.raises(ElanDeployError, match=MAX_MEMORY_ENV):
        available_memory()


def test_grayscale_in_grayscale_out(ort_engine, shared_data, tmp_path: Path) -> None:
    """An L image is run on replicated channels and written as its luminance: single-channel,
    so no tint; the luminance equals Pillow's convert('L') of the RGB the network produced."""
    gray = photo_crop(shared_data, 40, 52)[:, :, 0]
    Image.fromarray(gray).save(tmp_path / "gray.png")
    pixels = read_image(tmp_path / "gray.png", keep_gray=True)
    upscaler = Upscaler(ort_engine, 4, tile=32)
    out = upscaler.upscale_uint8(pixels)
    assert out.shape == (160, 208)
    Image.fromarray(out).save(tmp_path / "out.png")
    with Image.open(tmp_path / "out.png") as written:
        assert written.mode == "L"
    rgb = upscaler(np.repeat(pixels[:, :, None], 3, axis=2))
    luma = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    assert np.array_equal(out, to_uint8(luma))
    back = read_image(tmp_path / "out.png")
    assert np.array_equal(back[:, :, 0], back[:, :, 1]) and np.array_equal(back[:, :, 1], back[:, :, 2])
