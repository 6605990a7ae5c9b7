"""Store MatMul weights as (out, in) behind an explicit Transpose, the layout CPU kernels take.

A MatMul by a constant (in, out) matrix becomes OpenVINO's FullyConnected, whose weights are
(out, in): the plugin then keeps a weight Transpose node per projection in the executed graph
(180 of them for "gather" windows, each counted as data movement though folded at compile time).
Written as MatMul(x, Transpose(W_out_in)), the frontend folds the Transpose into the MatMul's
`transpose_b` and FullyConnected takes W as stored. ONNX Runtime folds the constant Transpose
once at session creation. The math is unchanged (the same numbers, transposed twice).
"""

from __future__ import annotations

import onnx
from onnx import helper, numpy_helper

__all__ = ["store_matmul_weights_out_in"]


def store_matmul_weights_out_in(model: onnx.ModelProto) -> int:
    """Rewrite every MatMul whose B is a 2-D float initializer as MatMul(A, Transpose(Bᵀ)).

    Returns the number of MatMuls rewritten. An initializer read by anything else stays as is.
    """
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    rewritten = 0
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        weight = initializers.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
        if weight is None or len(weight.dims) != 2 or weight.data_type != onnx.TensorProto.FLOAT or readers[weight.name] != 1:
            nodes.append(node)
            continue
        stored = numpy_helper.from_array(numpy_helper.to_array(weight).T.copy(), f"{weight.name}_out_in")
        graph.initializer.remove(weight)
        graph.initializer.append(stored)
        transposed = f"{weight.name}_in_out"
        nodes.append(helper.make_node("Transpose", [stored.name], [transposed], name=f"{node.name}/weight_in_out", perm=[1, 0]))
        node.input[1] = transposed
        nodes.append(node)
        rewritten += 1
    if rewritten:
        del graph.node[:]
        graph.node.extend(nodes)
    return rewritten
