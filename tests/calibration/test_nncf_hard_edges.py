"""OpenVINO INT8's own hard-edge floor: probes reroute only the named nodes, and the search floats
groups until the NNCF model, run the way the engine runs it, holds the floor it records."""

from __future__ import annotations

import onnx
import pytest

from elan_deploy.calibration.data import BUNDLED_SAMPLES, calibration_images, heldout_samples
from elan_deploy.calibration.layers import layer_groups

pytest.importorskip("nncf")

HELDOUT = 32
LEFT_IN_INT8 = ("body.8.lfe", "body.9.lfe", "body.10.lfe")  # the rest is float: three groups keep the search short


def _config(**changes):
    from elan_deploy.calibration.nncf_int8 import NNCFConfig

    return NNCFConfig(patches=4, patch_size=16, heldout_size=HELDOUT, **changes)


def _float_nodes(exported_onnx) -> list[str]:
    return [n for g in layer_groups(onnx.load(str(exported_onnx))) if g.name not in LEFT_IN_INT8 for n in g.nodes]


def _fake_quantized_inputs(model) -> dict[str, int]:
    return {
        op.get_friendly_name(): sum(op.input_value(i).get_node().get_type_name() == "FakeQuantize" for i in range(op.get_input_size()))
        for op in model.get_ordered_ops() if op.get_type_name() in ("Convolution", "MatMul")
    }


@pytest.fixture(scope="module")
def quantized(exported_onnx):
    from elan_deploy.calibration.nncf_int8 import quantize_ov

    return quantize_ov(exported_onnx, 4, _float_nodes(exported_onnx), _config(), BUNDLED_SAMPLES)[0]


def test_bypass_reroutes_only_the_named_group(exported_onnx, quantized) -> None:
    from elan_deploy.calibration.nncf_hard_edges import bypass_fake_quantize

    group = next(g for g in layer_groups(onnx.load(str(exported_onnx))) if g.name == LEFT_IN_INT8[0])
    before = _fake_quantized_inputs(quantized)
    names = set(group.nodes) | {f"{n}/WithoutBiases" for n in group.nodes}
    assert any(before[n] for n in names if n in before), "the group was not quantized to begin with"
    after = _fake_quantized_inputs(bypass_fake_quantize(quantized, set(group.nodes)))
    assert all(after[n] == 0 for n in names if n in after)
    assert {n: c for n, c in after.items() if n not in names} == {n: c for n, c in before.items() if n not in names}
    assert _fake_quantized_inputs(quantized) == before  # the probe worked on a copy


def test_floor_floats_groups_until_the_engine_holds_it(exported_onnx, quantized, tmp_path) -> None:
    import openvino as ov

    from elan_deploy.calibration.nncf_hard_edges import OpenVINOHardEdges
    from elan_deploy.calibration.nncf_int8 import RT_INFO_SECTION, quantize_held, write_ir

    samples = heldout_samples(calibration_images(BUNDLED_SAMPLES), 4, HELDOUT)
    checker = OpenVINOHardEdges(exported_onnx, samples, "f32")
    start = checker.worst_db(quantized)
    floor = start + 1.0  # above what the three INT8 groups give: the search has to float some
    model, ignored, _, hold = quantize_held(
        exported_onnx, 4, _float_nodes(exported_onnx), _config(hard_edge_floor_db=floor), BUNDLED_SAMPLES, "f32",
    )
    assert hold is not None and hold.inference_precision == "f32"
    assert hold.floor_db == pytest.approx(min(floor, hold.float_arithmetic_db))
    assert hold.groups and set(hold.groups) <= set(LEFT_IN_INT8)
    assert hold.worst_db >= hold.floor_db > start
    assert checker.worst_db(model) == pytest.approx(hold.worst_db, abs=1e-6)  # the record is the shipped model's
    floated = {n for g in layer_groups(onnx.load(str(exported_onnx))) if g.name in hold.groups for n in g.nodes}
    inputs = _fake_quantized_inputs(model)
    kept_float = [n for n in inputs if n.removesuffix("/WithoutBiases") in floated]
    assert kept_float and set(kept_float) <= set(ignored)  # the report names the kept model's ignored scope
    assert all(inputs[n] == 0 for n in floated | {f"{n}/WithoutBiases" for n in floated} if n in inputs)
    saved = ov.Core().read_model(str(write_ir(model, tmp_path / "held.xml")))
    for key, value in hold.rt_info().items():
        assert saved.get_rt_info([RT_INFO_SECTION, key]).astype(str) == value


def test_no_floor_leaves_the_model_as_quantized(exported_onnx) -> None:
    from elan_deploy.calibration.nncf_int8 import quantize_held

    _, _, _, hold = quantize_held(exported_onnx, 4, _float_nodes(exported_onnx), _config(hard_edge_floor_db=None), BUNDLED_SAMPLES, "f32")
    assert hold is None
