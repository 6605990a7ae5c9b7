"""Runtimes that run here (torch, onnxruntime, openvino) against the torch FP32 reference."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from elan_deploy.cli import main
from elan_deploy.cpu import cpu_caps
from elan_deploy.errors import ElanDeployError, RuntimeUnavailable
from elan_deploy.imaging import list_images, read_image
from elan_deploy.metrics import psnr
from elan_deploy.runtimes import BuildOptions, EngineCache, ShapeRange, build_engine, open_engine
from elan_deploy.runtimes.cache import MANIFEST
from tests.conftest import message_lines

# PyTorch's bf16 autocast is emulated (minutes per dataset) on CPUs without AVX512-BF16 or AMX,
# where the bench plan leaves it out too: there it runs with the slow checks.
_EMULATED = pytest.mark.slow if not cpu_caps().bf16 else ()
LOCAL_CELLS = [
    pytest.param("torch", "bf16", marks=_EMULATED),
    ("onnxruntime", "fp32"),
    ("onnxruntime", "fp16"),
    ("openvino", "fp32"),
    ("openvino", "bf16"),
    ("openvino", "fp16"),
]
FIDELITY_DB = {"fp32": 50.0, "bf16": 40.0, "fp16": 40.0}
EVAL_TOLERANCE_DB = {"fp32": 0.01, "bf16": 0.02, "fp16": 0.02}


def needs(runtime: str) -> None:
    if runtime == "openvino":
        pytest.importorskip("openvino", reason="OpenVINO not installed: pip install 'elan-deploy[openvino]'")


def upscale_folder(folder: Path, out: Path, onnx: Path, runtime: str, precision: str) -> list[np.ndarray]:
    assert main(["upscale", str(folder), "-o", str(out), "--runtime", runtime, "--precision", precision, "--onnx", str(onnx)]) == 0
    return [read_image(p) for p in list_images(out)]


@pytest.fixture(scope="module")
def set5_lr(shared_data: Path) -> Path:
    return shared_data / "Set5" / "LR_bicubic" / "X4"


@pytest.fixture(scope="module")
def torch_outputs(set5_lr: Path, exported_onnx: Path, tmp_path_factory) -> list[np.ndarray]:
    return upscale_folder(set5_lr, tmp_path_factory.mktemp("torch"), exported_onnx, "torch", "fp32")


@pytest.fixture(scope="module")
def torch_set5_psnr(shared_data: Path, tmp_path_factory) -> float:
    out = tmp_path_factory.mktemp("eval") / "torch.json"
    assert main(["eval", "--dataset", "Set5", "--data-root", str(shared_data), "--json", str(out)]) == 0
    return json.loads(out.read_text())["rows"][0]["psnr"]


@pytest.mark.parametrize(("runtime", "precision"), LOCAL_CELLS)
def test_upscale_matches_torch_fp32(runtime, precision, set5_lr, torch_outputs, exported_onnx, tmp_path) -> None:
    needs(runtime)
    outputs = upscale_folder(set5_lr, tmp_path, exported_onnx, runtime, precision)
    assert [o.shape for o in outputs] == [t.shape for t in torch_outputs]
    worst = min(psnr(o.astype(np.float64), t.astype(np.float64)) for o, t in zip(outputs, torch_outputs))
    assert worst >= FIDELITY_DB[precision], f"{runtime} {precision}: {worst:.2f} dB"


@pytest.mark.parametrize(("runtime", "precision"), LOCAL_CELLS)
def test_eval_matches_torch_fp32(runtime, precision, shared_data, exported_onnx, torch_set5_psnr, tmp_path) -> None:
    needs(runtime)
    out = tmp_path / "r.json"
    args = ["eval", "--runtime", runtime, "--precision", precision, "--onnx", str(exported_onnx),
            "--dataset", "Set5", "--data-root", str(shared_data), "--json", str(out)]
    assert main(args) == 0
    row = json.loads(out.read_text())["rows"][0]
    assert abs(row["psnr"] - torch_set5_psnr) <= EVAL_TOLERANCE_DB[precision]
    assert row["runtime"] == runtime and row["precision"] == precision and row["precision_used"]


@pytest.mark.slow
@pytest.mark.parametrize(("runtime", "precision"), LOCAL_CELLS)
def test_eval_set14_matches_torch_fp32(runtime, precision, shared_data, exported_onnx, tmp_path) -> None:
    needs(runtime)
    scores = {}
    for rt, prec in (("torch", "fp32"), (runtime, precision)):
        out = tmp_path / f"{rt}-{prec}.json"
        assert main(["eval", "--runtime", rt, "--precision", prec, "--onnx", str(exported_onnx),
                     "--dataset", "Set14", "--data-root", str(shared_data), "--json", str(out)]) == 0
        scores[rt, prec] = json.loads(out.read_text())["rows"][0]["psnr"]
    assert abs(scores[runtime, precision] - scores["torch", "fp32"]) <= EVAL_TOLERANCE_DB[precision]


def test_openvino_reports_the_precision_it_used(model_source) -> None:
    needs("openvino")
    engine = open_engine(model_source, "openvino", "fp32", ShapeRange.parse("1x3x32x32"))
    assert engine.info.precision_used == "fp32" and engine.info.threads
    bf16 = open_engine(model_source, "openvino", "bf16", ShapeRange.parse("1x3x32x32"))
    assert bf16.info.precision_used in {"bf16", "fp32"}  # fp32 on CPUs without bf16 support


def test_a_changed_export_rewrite_is_another_model(bundled, monkeypatch) -> None:
    """Engines and exports cached from an earlier form of the graph are not reused under the same version."""
    from elan_deploy.runtimes import source as source_module

    before = source_module.ModelSource(bundled).fingerprint()
    assert source_module.ModelSource(bundled).fingerprint() == before  # stable while the code is
    monkeypatch.setattr(source_module, "export_code_digest", lambda: "another-rewrite")
    assert source_module.ModelSource(bundled).fingerprint() != before


def test_engine_cache_reuses_and_detects_corruption(model_source, tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    shapes = ShapeRange.parse("1x3x32x32")
    first = build_engine(model_source, "onnxruntime", "fp32", shapes, cache=cache)
    assert build_engine(model_source, "onnxruntime", "fp32", shapes, cache=cache) == first
    engine_file = first / "model.onnx"
    engine_file.write_bytes(engine_file.read_bytes()[:5000])  # corrupted on disk
    with pytest.warns(UserWarning, match="corrupt"):
        rebuilt = build_engine(model_source, "onnxruntime", "fp32", shapes, cache=cache)
    assert rebuilt == first and (rebuilt / MANIFEST).is_file()
    assert open_engine(model_source, "onnxruntime", "fp32", shapes, cache=cache)(np.full((1, 3, 32, 32), 100, np.float32)).shape == (1, 3, 128, 128)


def test_one_cached_engine_serves_every_thread_count(model_source, tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    shapes = ShapeRange.parse("1x3x32x32")
    one = open_engine(model_source, "onnxruntime", "fp32", shapes, BuildOptions(threads=1), cache)
    two = open_engine(model_source, "onnxruntime", "fp32", shapes, BuildOptions(threads=2), cache)
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 1  # threads apply at load, not in the file
    assert (one.info.threads, two.info.threads) == (1, 2)


def test_failed_build_leaves_no_cache_entry(model_source, tmp_path: Path, monkeypatch) -> None:
    from elan_deploy.runtimes import onnxruntime_rt

    def explode(*args, **kwargs):
        raise RuntimeError("crash mid-build")

    monkeypatch.setattr(onnxruntime_rt, "copy_onnx", explode)
    with pytest.raises(RuntimeError):
        build_engine(model_source, "onnxruntime", "fp32", ShapeRange.parse("1x3x32x32"), cache=EngineCache(tmp_path))
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".lock"]  # only the entry's lock file


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--runtime", "tflite"], "unknown runtime 'tflite'"),
        (["--runtime", "onnxruntime", "--precision", "int4"], "unknown precision 'int4'"),
        (["--runtime", "onnxruntime", "--precision", "bf16"], "does not support bf16"),
        (["--runtime", "tensorrt", "--precision", "fp16"], "elan-deploy[tensorrt]"),
    ],
)
def test_bad_engine_choices_fail_with_one_line(args, needle, exported_onnx, capsys) -> None:
    code = main(["build", "--onnx", str(exported_onnx), *args])
    err = message_lines(capsys.readouterr().err)
    assert code != 0 and len(err) == 1 and needle in err[0]


def test_missing_extra_names_the_install_hint(model_source, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if the package were not installed
    with pytest.raises(RuntimeUnavailable, match=r"pip install 'elan-deploy\[openvino\]'"):
        open_engine(model_source, "openvino", "fp32")


def test_engine_rejects_unpadded_input(model_source) -> None:
    engine = open_engine(model_source, "onnxruntime", "fp32", ShapeRange.parse("1x3x16x16:1x3x32x32:1x3x64x64"))
    with pytest.raises(ElanDeployError, match="multiples of 16"):
        engine(np.zeros((1, 3, 20, 32), np.float32))
