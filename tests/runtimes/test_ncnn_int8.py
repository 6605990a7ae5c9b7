"""ncnn INT8: the ncnn2table table, the ncnn2int8 rewrite (checked byte by byte and run by ncnn),
and INT8 engines of the network on natural images."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from elan_deploy.errors import ElanDeployError
from elan_deploy.metrics import psnr
from elan_deploy.runtimes import EngineLoader, ShapeRange
from elan_deploy.runtimes.base import BuildOptions, Precision
from elan_deploy.runtimes.ncnn import int8_format
from elan_deploy.runtimes.ncnn.int8_format import (
    TAG_INT8,
    Graph,
    Int8Table,
    quantize_files,
    read_weights,
    table_for,
)
from elan_deploy.runtimes.ncnn.int8_search import conv_modules, input_absmax
from elan_deploy.runtimes.ncnn_rt import BIN, BUILD_INFO, PARAM, TABLE, NcnnEngine
from tests.helpers import natural_batch, natural_crop

# The modules above import ncnn and PNNX only when an engine is built or loaded.
pytest.importorskip("ncnn", reason="ncnn not installed: pip install 'elan-deploy[ncnn]'")
pytest.importorskip("pnnx", reason="PNNX not installed: pip install 'elan-deploy[ncnn]'")

SHAPE = ShapeRange.parse("1x3x16x16:1x3x32x48:2x3x64x96")  # the range of test_ncnn_rt's fp32 engine: one build serves both modules
INT8_FLOOR_DB = 35.0  # the other INT8 engines' floor against FP32 on natural images
# A 1x1 conv feeding a depthwise 3x3 feeding a 3x3 conv: both requantize cases and the 6-bit rule.
TINY_PARAM = """7767517
4 4
Input                    in0                      0 1 in0
Convolution              conv                     1 1 in0 a 0=8 1=1 5=1 6=24
ConvolutionDepthWise     dw                       1 1 a b 0=8 1=3 4=1 5=1 6=72 7=8
Convolution              conv3                    1 1 b out0 0=3 1=3 4=1 5=0 6=216
"""


def test_table_round_trips_in_ncnn2table_layout(tmp_path) -> None:
    table = Int8Table({"conv_0": np.array([127.0, 0.5, 1234.5678], np.float32)}, {"conv_0": 0.0254, "convdw_1": 3.5})
    path = tmp_path / TABLE
    table.write(path)
    assert path.read_text().splitlines(keepends=True) == [
        "conv_0_param_0 127.000000 0.500000 1234.567749 \n", "conv_0 0.025400 \n", "convdw_1 3.500000 \n",
    ]
    back = Int8Table.read(path)
    assert list(back.weights) == ["conv_0"] and back.activations == table.activations
    np.testing.assert_array_equal(back.weights["conv_0"], table.weights["conv_0"])
    assert back.text() == table.text()


def test_a_table_line_without_scales_is_refused() -> None:
    with pytest.raises(ElanDeployError, match="line 2 .*no scale"):
        Int8Table.parse("conv_param_0 1.0 \nconv\n")


@pytest.fixture
def tiny_engine(tmp_path) -> Path:
    """The three-layer net above, fp32, as PNNX writes weights (raw fp32 tag 0, then bias)."""
    rng = np.random.default_rng(0)
    parts = []
    for size, bias in ((24, 8), (72, 8), (216, 0)):
        parts += [struct.pack("<I", 0), rng.normal(0, 0.3, size).astype("<f4").tobytes(), rng.normal(0, 1, bias).astype("<f4").tobytes()]
    (tmp_path / PARAM).write_text(TINY_PARAM)
    (tmp_path / BIN).write_bytes(b"".join(parts))
    return tmp_path


def _run(folder: Path, precision: Precision, x: np.ndarray) -> np.ndarray:
    return NcnnEngine(folder, precision, ShapeRange.static(x.shape), BuildOptions(threads=1))(x)


def test_rewrite_writes_ncnn2int8_bytes_that_ncnn_runs_in_int8(tiny_engine, tmp_path, shared_data) -> None:
    x = natural_crop(shared_data, 16, 16).transpose(2, 0, 1)[None].copy()
    graph = Graph.read(tiny_engine / PARAM)
    table = table_for(graph, read_weights(graph, tiny_engine / BIN), input_absmax(tiny_engine, [x], graph.quantizable(), 1))
    out = tmp_path / "int8"
    out.mkdir()
    assert quantize_files(tiny_engine / PARAM, tiny_engine / BIN, table, out / PARAM, out / BIN) == ["conv", "dw", "conv3"]
    terms = {layer.name: layer.get(8, 0) for layer in Graph.read(out / PARAM).layers}
    assert terms == {"in0": 0, "conv": 102, "dw": 101, "conv3": 2}  # requantize into a quantized conv / depthwise
    data = (out / BIN).read_bytes()
    assert struct.unpack_from("<I", data)[0] == TAG_INT8
    int8 = np.frombuffer(data, np.int8, 24, 4).reshape(8, 3)
    assert np.abs(int8).max(axis=1).tolist() == [127] * 8  # per output channel, 127/absmax
    scales = np.frombuffer(data, "<f4", 8 + 8 + 1 + 1, 28)  # bias, weight scales, input scale, output scale
    np.testing.assert_array_equal(scales[8:16], table.weights["conv"])
    assert scales[16] == np.float32(table.activations["conv"]) and scales[17] == np.float32(table.activations["dw"])
    conv3 = read_weights(graph, tiny_engine / BIN)["conv3"].weight.reshape(3, -1)
    np.testing.assert_allclose(np.abs(conv3).max(axis=1) * table.weights["conv3"], 31, rtol=1e-6)  # 3x3 stride 1: 6-bit
    fp32, got = _run(tiny_engine, Precision.FP32, x), _run(out, Precision.INT8, x)
    assert np.isfinite(got).all() and not np.array_equal(got, fp32)  # ncnn really ran the INT8 kernels
    assert psnr(got, fp32, peak=float(np.abs(fp32).max())) > 30.0


def test_layers_left_out_of_the_table_stay_fp32(tiny_engine, tmp_path) -> None:
    graph = Graph.read(tiny_engine / PARAM)
    absmax = {layer.name: 100.0 for layer in graph.quantizable()}
    table = table_for(graph, read_weights(graph, tiny_engine / BIN), absmax).only(["conv3"])
    quantize_files(tiny_engine / PARAM, tiny_engine / BIN, table, tmp_path / "q.param", tmp_path / "q.bin")
    assert [layer.get(8, 0) for layer in Graph.read(tmp_path / "q.param").layers] == [0, 0, 0, 2]
    source = (tiny_engine / BIN).read_bytes()
    float_part = 4 + 4 * (24 + 8) + 4 + 4 * (72 + 8)
    assert (tmp_path / "q.bin").read_bytes()[:float_part] == source[:float_part]


def test_a_table_for_another_network_is_refused(tiny_engine, tmp_path) -> None:
    table = Int8Table({"conv_99": np.ones(8, np.float32)}, {"conv_99": 1.0})
    with pytest.raises(ElanDeployError, match="does not fit this engine .*conv_99"):
        quantize_files(tiny_engine / PARAM, tiny_engine / BIN, table, tmp_path / "q.param", tmp_path / "q.bin")


@pytest.fixture(scope="module")
def ncnn_fp32_folder(model_source) -> Path:
    return EngineLoader(model_source, "ncnn", "fp32", SHAPE, threads=1).build()


def test_network_quantized_whole_stays_close_to_fp32_on_a_photo(ncnn_fp32_folder, tmp_path, shared_data) -> None:
    """Every convolution INT8 (no float fallback): the worst case the search starts from."""
    graph = Graph.read(ncnn_fp32_folder / PARAM)
    calibration = list(natural_batch(4, 32, 48)[:, None])  # T91 crops
    absmax = input_absmax(ncnn_fp32_folder, calibration, graph.quantizable(), 1)
    table = table_for(graph, read_weights(graph, ncnn_fp32_folder / BIN), absmax)
    layers = quantize_files(ncnn_fp32_folder / PARAM, ncnn_fp32_folder / BIN, table, tmp_path / PARAM, tmp_path / BIN)
    assert len(layers) == len(graph.quantizable()) > 100
    assert sum(" 8=" in line for line in (tmp_path / PARAM).read_text().splitlines()) == len(layers)
    photo = natural_crop(shared_data, 32, 48, "Set5/HR/butterfly.png", top=100, left=100).transpose(2, 0, 1)[None].copy()
    fp32, int8 = _run(ncnn_fp32_folder, Precision.FP32, photo), _run(tmp_path, Precision.INT8, photo)
    assert np.isfinite(int8).all()
    assert psnr(np.clip(int8, 0, 255), np.clip(fp32, 0, 255)) > INT8_FLOOR_DB


def test_layer_groups_follow_the_onnx_recipe(ncnn_fp32_folder, model_source) -> None:
    graph = Graph.read(ncnn_fp32_folder / PARAM)
    modules = conv_modules(model_source.deploy_module(windows="rank4"))
    groups = int8_format.layer_groups(graph, read_weights(graph, ncnn_fp32_folder / BIN), modules)
    assert list(groups)[:4] == ["head", "body.0.lfe", "body.0.project_inp", "body.0.project_out"] and list(groups)[-1] == "tail"
    assert len(groups["body.0.lfe"]) == 8  # two LFEs: a shift (depthwise) conv before each of their two 1x1 convs


@pytest.mark.slow  # two PNNX conversions plus calibration and the float-fallback search: minutes on 2 cores
def test_int8_engine_builds_under_the_budget_and_runs(model_source, shared_data) -> None:
    loader = EngineLoader(model_source, "ncnn", "int8", SHAPE, threads=1)
    engine, fp32 = loader.open(), EngineLoader(model_source, "ncnn", "fp32", SHAPE, threads=1).open()
    folder = loader.build()
    record = json.loads((folder / BUILD_INFO).read_text())["int8"]
    assert record["met"] and record["heldout_drop_db"] + record["heldout_drop_se_db"] <= record["budget_db"] == 0.05
    table = Int8Table.read(folder / TABLE)
    assert set(table.activations) == set(record["int8_layers"]) and record["int8_layers"]
    assert engine.info.precision_used == "int8" and engine.info.details["int8_layers"].startswith(f"{len(record['int8_layers'])}/")
    photo = natural_crop(shared_data, 32, 48, "Set5/HR/butterfly.png", top=100, left=100).transpose(2, 0, 1)[None].copy()
    got = engine(photo)
    assert np.isfinite(got).all() and psnr(np.clip(got, 0, 255), np.clip(fp32(photo), 0, 255)) > INT8_FLOOR_DB
