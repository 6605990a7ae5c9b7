"""NNCF INT8 for OpenVINO: skipped and float nodes stay float, and the model stays close to fp32."""

from __future__ import annotations

import numpy as np
import pytest

from elan_deploy.calibration.data import BUNDLED_SAMPLES
from tests.helpers import graph_names, natural_crop


def test_nncf_int8_keeps_skips_and_float_nodes_float(exported_onnx, shared_data, tmp_path) -> None:
    pytest.importorskip("nncf")
    import openvino as ov

    from elan_deploy.calibration.nncf_int8 import NNCFConfig, quantize_ov, write_ir
    from elan_deploy.metrics import psnr

    config = NNCFConfig(patches=4, patch_size=16)
    floated = graph_names(exported_onnx, ["/head/Conv", "/tail/Conv"])
    model, ignored, _ = quantize_ov(exported_onnx, 4, floated, config, BUNDLED_SAMPLES)
    assert all(f"{name}/WithoutBiases" in ignored for name in floated), ignored
    fq = [op for op in model.get_ordered_ops() if op.get_type_name() == "FakeQuantize"]
    assert fq
    for op in model.get_ordered_ops():
        if op.get_type_name() == "Add" or op.get_friendly_name() in ignored:
            kinds = {op.input_value(i).get_node().get_type_name() for i in range(op.get_input_size())}
            assert "FakeQuantize" not in kinds, op.get_friendly_name()
    xml = write_ir(model, tmp_path / "nncf.xml")
    assert xml.is_file() and xml.with_suffix(".bin").is_file()
    crop = natural_crop(shared_data, 48, 64)
    x = np.ascontiguousarray(crop.transpose(2, 0, 1)[None])
    core = ov.Core()
    run = lambda m: core.compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x)[0]  # noqa: E731
    assert psnr(np.clip(run(core.read_model(str(xml))), 0, 255), np.clip(run(ov.convert_model(str(exported_onnx))), 0, 255)) > 35.0
