"""Graph simplification: onnxsim, with onnxslim as the fallback, both keeping H/W dynamic.

Both simplifiers run *without* their general common-subexpression elimination. In the "sdpa"
strategy the second GMSA of a block recomputes softmax(q·qᵀ) from the first GMSA's q on
purpose, so that every GMSA holds one self-contained MatMul→Softmax→MatMul (or, at opset 23,
one `Attention` node) that a runtime can fuse. Full CSE merges the two computations back into
one Softmax with two consumers, i.e. silently turns "sdpa" into "shared". `dedupe_shape_nodes`
then merges only the duplicated shape arithmetic (Shape/Gather/Unsqueeze/Concat feeding the
Reshapes), which is all CSE was useful for here: "shared" graphs come out node-for-node the same
as with full CSE (1454 nodes for depthwise/shared).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import onnx
from onnx import numpy_helper

log = logging.getLogger(__name__)

# Ops that can appear in the int64 shape arithmetic of a traced graph.
_SHAPE_OPS = frozenset({"Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Div", "Mul", "Add", "Sub", "Cast", "Slice", "Constant"})


def _with_onnxsim(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    import onnxsim

    # Gemm fusion would wrap each rank-4 window projection (MatMul + bias) in Reshape → Gemm → Reshape
    simplified, ok = onnxsim.simplify(model, skipped_optimizers=["eliminate_common_subexpression", "fuse_matmul_add_bias_into_gemm"])
    if not ok:
        raise RuntimeError("onnxsim could not validate the simplified model")
    return simplified, f"onnxsim {str(onnxsim.__version__).lstrip('v')}"


def _with_onnxslim(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    import onnxslim

    slimmed = onnxslim.slim(model, skip_optimizations=["subexpression_elimination"])
    if slimmed is None:
        raise RuntimeError("onnxslim returned no model")
    return slimmed, f"onnxslim {onnxslim.__version__}"


SIMPLIFIERS: tuple[tuple[str, Callable[[onnx.ModelProto], tuple[onnx.ModelProto, str]]], ...] = (
    ("onnxsim", _with_onnxsim),
    ("onnxslim", _with_onnxslim),
)


def simplify_model(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """Simplify with the first simplifier that works; returns (model, "tool version").

    A missing or failing simplifier is logged and the next one tried; if none works the
    unsimplified graph is returned ("none"): it is still exact, only larger.
    """
    errors = []
    for name, simplify in SIMPLIFIERS:
        try:
            simplified, tool = simplify(model)
        except Exception as exc:  # noqa: BLE001 - any simplifier failure means: try the next one
            errors.append(f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            log.warning("simplifier %s failed (%s); trying the next one", name, errors[-1])
            continue
        dedupe_shape_nodes(simplified.graph)
        return simplified, tool
    log.warning("no simplifier worked (%s); keeping the graph as exported", "; ".join(errors))
    dedupe_shape_nodes(model.graph)
    return model, "none"


def _attribute_key(node: onnx.NodeProto) -> tuple[bytes, ...]:
    return tuple(a.SerializeToString(deterministic=True) for a in sorted(node.attribute, key=lambda a: a.name))


def dedupe_shape_nodes(graph: onnx.GraphProto) -> int:
    """Merge identical nodes of the int shape arithmetic (a restricted CSE). Returns merges.

    A node qualifies if it is a `Shape` or if every input is an integer initializer, an output
    of a qualifying node, or absent. Data-path ops (float Slice/Concat/MatMul…) are never merged.
    """
    int_types = {onnx.TensorProto.INT64, onnx.TensorProto.INT32}
    initializers = {t.name: t for t in graph.initializer}
    shape_values: set[str] = {name for name, t in initializers.items() if t.data_type in int_types}
    # key an initializer by its content, so equal constants with different names still match
    init_key = {
        name: ("init", t.data_type, tuple(t.dims), numpy_helper.to_array(t).tobytes())
        for name, t in initializers.items()
        if name in shape_values
    }
    canonical: dict[str, str] = {}
    seen: dict[tuple, list[str]] = {}
    kept: list[onnx.NodeProto] = []
    merged = 0
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in canonical:
                node.input[i] = canonical[name]
        qualifies = node.domain in ("", "ai.onnx") and node.op_type in _SHAPE_OPS and (
            node.op_type == "Shape" or all(not name or name in shape_values for name in node.input)
        )
        if node.op_type == "Constant":
            qualifies = any(a.name == "value" and a.t.data_type in int_types for a in node.attribute)
        if not qualifies:
            kept.append(node)
            continue
        key = (node.op_type, node.domain, tuple(init_key.get(n, n) for n in node.input), _attribute_key(node))
        if key in seen and len(seen[key]) == len(node.output):
            for old, new in zip(node.output, seen[key]):
                canonical[old] = new
            merged += 1
            continue
        seen[key] = list(node.output)
        shape_values.update(node.output)
        kept.append(node)
    if merged:
        for output in graph.output:
            if output.name in canonical:
                raise RuntimeError("dedupe_shape_nodes would rename a graph output")
        removed = set(canonical)
        value_info = [vi for vi in graph.value_info if vi.name not in removed]
        del graph.value_info[:]
        graph.value_info.extend(value_info)
        del graph.node[:]
        graph.node.extend(kept)
    return merged
