"""Layer by layer: the first divergence is the node that was changed."""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import numpy_helper


def _natural_feed(height: int, width: int) -> dict[str, np.ndarray]:
    from elan_deploy.diff.inputs import natural_inputs

    return dict(natural_inputs((1, 3, height, width), 1).feeds[0])


def test_corrupted_node_is_named_as_the_first_divergence(exported_onnx, tmp_path):
    from elan_deploy.diff.layers import LayerTarget, compare_layers

    model = onnx.load(str(exported_onnx))
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    initializers = {t.name: t for t in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv" and uses.get(n.input[1]) == 1 and n.input[1] in initializers]
    victim = convs[len(convs) // 2]  # a convolution in the middle of the body, owning its weights
    weight = initializers[victim.input[1]]
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 1.5, weight.name))
    corrupted = tmp_path / "corrupted.onnx"
    onnx.save(model, str(corrupted))

    reference = LayerTarget("reference", "onnxruntime", exported_onnx)
    candidate = LayerTarget("corrupted", "onnxruntime", corrupted)
    (report,) = compare_layers(reference, [candidate], exported_onnx, _natural_feed(32, 32), threshold_db=40.0)
    compute = {n.output[0] for n in model.graph.node if n.op_type in ("Conv", "MatMul", "Softmax")}
    assert compute <= {r.tensor for r in report.rows}  # every layer of the graph is compared, not a sample
    assert report.first_divergence == victim.output[0]
    victim_depth = list(model.graph.node).index(victim)
    before = [r for r in report.rows if r.depth < victim_depth]
    assert before and all(r.passed and r.psnr_db == math.inf for r in before)  # untouched: bit-identical
    hit = next(r for r in report.rows if r.tensor == victim.output[0])
    assert hit.op == "Conv" and hit.psnr_db < 40.0 and hit.max_abs_error > 0
