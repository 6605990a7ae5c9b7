"""The INT8 recipe: nodes kept float read no dequantized tensor."""

from __future__ import annotations

from elan_deploy.calibration.data import BUNDLED_SAMPLES
from elan_deploy.calibration.int8 import QuantizeConfig
from tests.helpers import graph_names


def test_float_nodes_really_run_float(exported_onnx, tmp_path) -> None:
    """An excluded node reads no DequantizeLinear output (input, weight or bias), even where
    ORT's quantizer shares a quantized tensor or weight with a quantized node."""
    from elan_deploy.calibration.data import PatchSpec, load_patches
    from elan_deploy.calibration.recipes import calibrate, quantize

    config = QuantizeConfig(patches=3, patch_size=16)
    patches, _ = load_patches(PatchSpec(patches=3, patch_size=16), BUNDLED_SAMPLES, tmp_path)
    ranges = calibrate(exported_onnx, patches, config, tmp_path / "ranges.json")
    excluded = graph_names(exported_onnx, ["/head/Conv", "/tail/Conv", "/body.0/lfes.0/conv0/Conv", "/body.3/gmsas.0/MatMul_1"])
    model = quantize(exported_onnx, ranges, config, excluded)
    producers = {o: n for n in model.graph.node for o in n.output}
    reads_dq = lambda node: [i for i in node.input if i in producers and producers[i].op_type == "DequantizeLinear"]  # noqa: E731
    for node in model.graph.node:
        if node.name in excluded:
            assert not reads_dq(node), (node.name, reads_dq(node))
        elif node.op_type in ("Conv", "MatMul"):
            assert reads_dq(node), node.name
