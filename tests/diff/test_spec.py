"""Engine specs for `diff`: RUNTIME:PRECISION, parsed and refused."""

from __future__ import annotations

import pytest

from elan_deploy.errors import ElanDeployError


def test_engine_specs_parse_and_refuse():
    from elan_deploy.diff.spec import EngineSpec, parse_engine_specs

    specs = parse_engine_specs(["onnxruntime:fp32", "openvino:BF16"])
    assert [s.label for s in specs] == ["onnxruntime:fp32", "openvino:bf16"]
    for bad, words in [
        (["onnxruntime:fp32"], "at least two"),
        (["onnxruntime:fp32", "onnxruntime:fp32"], "twice"),
        (["onnxruntime", "openvino:fp32"], "RUNTIME:PRECISION"),
        (["onnxrt:fp32", "openvino:fp32"], "unknown runtime"),
        (["onnxruntime:bf16", "openvino:fp32"], "does not run bf16"),
        (["onnxruntime:fp8", "openvino:fp32"], "unknown precision"),
    ]:
        with pytest.raises(ElanDeployError, match=words):
            parse_engine_specs(bad)
    assert EngineSpec.parse("tensorrt:int8").label == "tensorrt:int8"
