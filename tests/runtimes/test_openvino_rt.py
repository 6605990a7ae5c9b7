"""OpenVINO engines report the precision they run."""

from __future__ import annotations

from elan_deploy.runtimes import EngineLoader, ShapeRange
from tests.helpers import needs


def test_openvino_reports_the_precision_it_used(model_source) -> None:
    needs("openvino")
    engine = EngineLoader(model_source, "openvino", "fp32", ShapeRange.parse("1x3x32x32")).open()
    assert engine.info.precision_used == "fp32" and engine.info.threads
    bf16 = EngineLoader(model_source, "openvino", "bf16", ShapeRange.parse("1x3x32x32")).open()
    assert bf16.info.precision_used in {"bf16", "fp32"}  # fp32 on CPUs without bf16 support
