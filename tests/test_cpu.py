"""What this CPU runs natively: the flags override and the precision each runtime executes."""

from __future__ import annotations

import pytest

from elan_deploy.cpu import FLAGS_ENV, cpu_caps, precision_plan
from tests.helpers import AVX2, SAPPHIRE_RAPIDS, X86, ZEN4


def test_the_cpu_override_replaces_the_detected_flags(monkeypatch) -> None:
    monkeypatch.setenv(FLAGS_ENV, "AVX2, fma")
    caps = cpu_caps()
    assert caps.overridden and caps.flags == {"avx2", "fma"} and not caps.bf16
    assert "assumed from" in caps.describe()
    monkeypatch.delenv(FLAGS_ENV)
    assert not cpu_caps().overridden


@pytest.mark.skipif(not X86, reason="precision support is judged by x86 flags")
def test_openvino_precision_follows_its_cpu_plugin_rules() -> None:
    assert precision_plan("openvino", "bf16", AVX2).runs == "fp32"  # f32 when bf16 is asked on AVX2
    assert precision_plan("openvino", "fp16", ZEN4).runs == "bf16"  # the plugin's default where f16 is not native
    assert precision_plan("openvino", "fp16", SAPPHIRE_RAPIDS).runs == "fp16"
    assert precision_plan("openvino", "int8", AVX2).runs == "int8+fp32"
    assert not precision_plan("torch", "bf16", AVX2).native and precision_plan("torch", "bf16", ZEN4).native
    assert precision_plan("torch-compile", "fp32", AVX2).native


@pytest.mark.skipif(not X86, reason="precision support is judged by x86 flags")
def test_auto_precision_is_the_fastest_one_the_cpu_runs_natively() -> None:
    from elan_deploy.cpu import fastest_native_precision

    assert [fastest_native_precision("openvino", caps) for caps in (AVX2, ZEN4, SAPPHIRE_RAPIDS)] == ["fp32", "bf16", "bf16"]
    assert [fastest_native_precision("torch-compile", caps) for caps in (AVX2, ZEN4)] == ["fp32", "bf16"]
    assert fastest_native_precision("onnxruntime", SAPPHIRE_RAPIDS) == "fp32"
    assert fastest_native_precision("tensorrt", AVX2) == "fp16"
