"""Core ML: conversion of the bundled ELAN-light x4 to ML Programs, checked on the saved spec.

Conversion runs on any OS; prediction needs macOS, so off macOS these tests check what the
program is (ranks, op precisions, quantized weights) and that `load` says why it cannot run.
Each conversion takes ~15-30 s on 2 cores, so the engines are built once per module, at a
small static shape, through `EngineLoader.build` and a real engine cache.
"""

from __future__ import annotations

import platform
from collections import Counter

import pytest

pytest.importorskip("coremltools", reason="coremltools is not installed; pip install 'elan-deploy[coreml]'")

from coremltools.proto import FeatureTypes_pb2, MIL_pb2  # noqa: E402

from elan_deploy.cli import main  # noqa: E402
from elan_deploy.errors import ElanDeployError, RuntimeUnavailable  # noqa: E402
from elan_deploy.runtimes import (  # noqa: E402
    EngineCache,
    ModelSource,
    Precision,
    ShapeRange,
    EngineLoader,
    get_runtime,
)
from elan_deploy.runtimes.coreml_rt import (  # noqa: E402
    DEFAULT_SHAPES,
    PACKAGE,
    CoreMLRuntime,
    PredictionNeedsMacOS,
    engine_shapes,
    load_program_spec,
    op_output_dtypes,
    program_max_rank,
    program_operations,
)

SHAPES = ShapeRange.parse("1x3x32x32")
# coremltools 9 warns thousands of times about its own op registry, and torch.export about pytree specs.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Function _TORCH_OPS_REGISTRY:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:.*LeafSpec:FutureWarning"),
]


@pytest.fixture(scope="module")
def source(bundled) -> ModelSource:
    return ModelSource(bundled)


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
    """A cache root laid out as the CLI's --cache-dir (engines/ and onnx/), so the command-line
    tests find the engines the fixtures below built."""
    return tmp_path_factory.mktemp("coreml-cache")


@pytest.fixture(scope="module")
def cache(cache_root) -> EngineCache:
    return EngineCache(cache_root / "engines")


@pytest.fixture(scope="module")
def fp32_engine(source, cache):
    return EngineLoader(source, "coreml", "fp32", SHAPES, cache_root=cache.root.parent).build()


@pytest.fixture(scope="module")
def fp16_engine(source, cache):
    return EngineLoader(source, "coreml", "fp16", SHAPES, cache_root=cache.root.parent).build()


def _op_counts(package) -> Counter:
    return Counter(op.type for op in program_operations(load_program_spec(package)))


def _io_dtypes(package) -> set[int]:
    description = load_program_spec(package).description
    return {feature.type.multiArrayType.dataType for feature in [*description.input, *description.output]}


def test_fp32_package_is_rank5_mlprogram(fp32_engine, cache):
    package = fp32_engine / PACKAGE
    assert package.is_dir() and (package / "Manifest.json").is_file()
    assert fp32_engine.parent.parent == cache.root  # published by the cache
    assert 0 < program_max_rank(package) <= 5  # Core ML rejects tensors above rank 5
    assert op_output_dtypes(package, "conv") == {"FLOAT32"}
    assert op_output_dtypes(package, "softmax") == {"FLOAT32"}


def test_fp32_build_is_cached(fp32_engine, source, cache):
    assert EngineLoader(source, "coreml", "fp32", SHAPES, cache_root=cache.root.parent).build() == fp32_engine


def test_fp16_keeps_attention_in_fp32(fp16_engine):
    package = fp16_engine / PACKAGE
    assert program_max_rank(package) <= 5
    assert op_output_dtypes(package, "conv") == {"FLOAT16"}
    assert op_output_dtypes(package, "softmax") == {"FLOAT32"}
    spec = load_program_spec(package)
    softmaxes = sum(op.type == "softmax" for op in program_operations(spec))
    fp32_matmuls = sum(
        op.type == "matmul" and op.outputs[0].type.tensorType.dataType == MIL_pb2.DataType.FLOAT32 for op in program_operations(spec)
    )
    assert softmaxes > 0 and fp32_matmuls == softmaxes  # exactly the logits q·qᵀ stay fp32
    # the interface stays float32 like every other engine's
    assert _io_dtypes(package) == {FeatureTypes_pb2.ArrayFeatureType.FLOAT32}


@pytest.mark.slow  # ~55 s of weight quantization on top of the fp16 conversion
def test_int8_quantizes_weights(source, cache, fp16_engine):
    engine = EngineLoader(source, "coreml", "int8", SHAPES, cache_root=cache.root.parent).build()
    package = engine / PACKAGE
    counts = _op_counts(package)
    dequantize = {t: n for t, n in counts.items() if t.startswith("constexpr") or "dequantize" in t}
    assert dequantize and sum(dequantize.values()) >= counts["conv"] // 2
    assert op_output_dtypes(package, "softmax") == {"FLOAT32"}
    assert program_max_rank(package) <= 5
    size = lambda folder: sum(p.stat().st_size for p in (folder / PACKAGE).rglob("*") if p.is_file())  # noqa: E731
    assert size(engine) < 0.75 * size(fp16_engine)


off_macos = pytest.mark.skipif(platform.system() == "Darwin", reason="checks the off-macOS behaviour")


@off_macos
def test_load_off_macos_names_macos(source, cache, fp32_engine):
    assert not CoreMLRuntime().can_predict()
    with pytest.raises(PredictionNeedsMacOS, match="macOS") as info:
        EngineLoader(source, "coreml", "fp32", SHAPES, cache_root=cache.root.parent).open()
    assert isinstance(info.value, RuntimeUnavailable)  # callers that know only the base class still catch it
    assert "\n" not in str(info.value) and PACKAGE in str(info.value)


def test_converted_info_reads_the_engine_folder(fp16_engine):
    info = CoreMLRuntime().converted_info(fp16_engine, Precision.FP16)
    assert info.runtime == "coreml" and info.precision is Precision.FP16
    assert info.precision_used == "fp16+fp32-attention" and info.details["shapes"] == "1x3x32x32"


def test_default_shape_is_one_upscaler_tile():
    """Without --shapes, Core ML builds the Upscaler's fixed tile (a range over H/W cannot convert)."""
    from elan_deploy.upscale import DEFAULT_TILE

    assert get_runtime("coreml").default_shapes == DEFAULT_SHAPES == ShapeRange.static((1, 3, DEFAULT_TILE, DEFAULT_TILE))
    assert engine_shapes(DEFAULT_SHAPES) == [(1, 3, DEFAULT_TILE, DEFAULT_TILE)]


def _build_cli(output, cache_root, *shapes: str) -> int:
    flags = ["--runtime", "coreml", "--precision", "fp16", *shapes, "--output", str(output), "--cache-dir", str(cache_root)]
    return main(["build", *flags])


@off_macos
def test_build_cli_converts_on_linux(fp16_engine, cache_root, tmp_path, capsys):
    """On Linux conversion is the job: exit 0, the package in --output, a note that prediction
    needs macOS. (The engine is the fixture's, found in the same cache.)"""
    output = tmp_path / "engine"
    assert _build_cli(output, cache_root, "--shapes", "1x3x32x32") == 0
    assert (output / PACKAGE / "Manifest.json").is_file()
    assert (output / PACKAGE).is_dir() and any((output / PACKAGE).rglob("*.bin"))
    err = capsys.readouterr()
    assert "note: Core ML prediction needs macOS" in err.err and "1x3x32x32" in err.out


@pytest.mark.slow
@off_macos
def test_build_cli_default_shape_converts_on_linux(cache_root, tmp_path, capsys):
    """The issue's command as typed (default shape: one 256x256 tile; ~1 min on 2 cores)."""
    output = tmp_path / "engine"
    assert _build_cli(output, cache_root) == 0
    assert (output / PACKAGE / "Manifest.json").is_file()
    assert "1x3x256x256" in capsys.readouterr().out


def test_shape_ranges():
    assert engine_shapes(SHAPES) == [(1, 3, 32, 32)]
    assert engine_shapes(ShapeRange.parse("1x3x32x32:2x3x32x32:4x3x32x32")) == [(2, 3, 32, 32), (1, 3, 32, 32), (4, 3, 32, 32)]
    with pytest.raises(ElanDeployError, match="one H x W"):
        engine_shapes(ShapeRange.parse("1x3x16x16:1x3x32x32:1x3x64x64"))


def test_range_over_height_is_refused_before_converting(source, tmp_path):
    with pytest.raises(ElanDeployError, match="only the batch may vary"):
        EngineLoader(source, "coreml", "fp32", ShapeRange.parse("1x3x16x16:1x3x32x32:1x3x64x64"), cache_root=tmp_path).build()
    assert not list(tmp_path.rglob("*.mlpackage"))


@pytest.mark.slow
def test_batch_range_uses_enumerated_shapes(source, tmp_path):
    engine = EngineLoader(source, "coreml", "fp32", ShapeRange.parse("1x3x32x32:2x3x32x32:4x3x32x32"), cache_root=tmp_path).build()
    array = load_program_spec(engine / PACKAGE).description.input[0].type.multiArrayType
    assert sorted(tuple(s.shape) for s in array.enumeratedShapes.shapes) == [(1, 3, 32, 32), (2, 3, 32, 32), (4, 3, 32, 32)]


def test_check_and_version():
    import coremltools

    CoreMLRuntime().check()
    assert CoreMLRuntime().version() == coremltools.__version__
    assert CoreMLRuntime(keep_attention_fp32=False).version() != CoreMLRuntime().version()  # keys the cache apart


def _tiny_attention_program(ct):
    """softmax(x·xᵀ)·x as a MIL program: the ELAN attention pattern, converted in a second."""
    from coremltools.converters.mil import Builder as mb

    @mb.program(input_specs=[mb.TensorSpec(shape=(4, 16, 8))], opset_version=ct.target.macOS13)
    def attention(x):
        weights = mb.softmax(x=mb.matmul(x=x, y=x, transpose_y=True), axis=-1)
        return mb.matmul(x=weights, y=x)

    return attention


@pytest.mark.parametrize("keep", [True, False])
def test_attention_fp32_option(keep):
    import coremltools as ct

    from elan_deploy.runtimes.base import Precision
    from elan_deploy.runtimes.coreml_rt import compute_precision

    mlmodel = ct.convert(
        _tiny_attention_program(ct), convert_to="mlprogram", compute_precision=compute_precision(ct, Precision.FP16, keep),
        minimum_deployment_target=ct.target.macOS13, skip_model_load=True,
    )
    ops = [op for op in program_operations(mlmodel.get_spec()) if op.type in {"matmul", "softmax"}]
    dtypes = [(op.type, op.outputs[0].type.tensorType.dataType) for op in ops]
    attention = MIL_pb2.DataType.FLOAT32 if keep else MIL_pb2.DataType.FLOAT16
    assert dtypes == [("matmul", attention), ("softmax", attention), ("matmul", MIL_pb2.DataType.FLOAT16)]


def test_the_range_guard_converts_as_one_clip_per_folded_site(fp32_engine, source):
    """Every clamp folded into its conv becomes one Core ML clip, the tail's a maximum + minimum pair
    (conversion on Linux; prediction needs macOS)."""
    counts = _op_counts(fp32_engine / PACKAGE)
    sites = source.range_guard().sites
    assert source.guard_label == "guarded" and len(sites) > 40
    assert counts["clip"] == len(sites) - 1 and counts["maximum"] == counts["minimum"] == 1, dict(counts)
