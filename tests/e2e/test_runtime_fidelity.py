"""Runtimes that run here (torch, onnxruntime, openvino) against the torch FP32 reference, through `upscale` and `eval`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from elan_deploy.cli import main
from elan_deploy.cpu import cpu_caps
from elan_deploy.imaging import list_images, read_image
from elan_deploy.metrics import psnr
from tests.helpers import needs

# PyTorch's bf16 autocast is emulated (minutes per dataset) on CPUs without AVX512-BF16 or AMX,
# where the bench plan leaves it out too: there it runs with the slow checks.
_EMULATED = pytest.mark.slow if not cpu_caps().bf16 else ()
# OpenVINO runs bf16 as f32 without AVX-512 and fp16 as bf16 or f32 without fp16 arithmetic: there
# those cells repeat another cell's check, and run with the slow checks.
_OPENVINO_BF16 = pytest.mark.slow if not cpu_caps().avx512 else ()
_OPENVINO_FP16 = pytest.mark.slow if not cpu_caps().fp16 else ()
LOCAL_CELLS = [
    pytest.param("torch", "bf16", marks=_EMULATED),
    ("onnxruntime", "fp32"),
    ("onnxruntime", "fp16"),
    ("openvino", "fp32"),
    pytest.param("openvino", "bf16", marks=_OPENVINO_BF16),
    pytest.param("openvino", "fp16", marks=_OPENVINO_FP16),
]
FIDELITY_DB = {"fp32": 50.0, "bf16": 40.0, "fp16": 40.0}
EVAL_TOLERANCE_DB = {"fp32": 0.01, "bf16": 0.02, "fp16": 0.02}


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
