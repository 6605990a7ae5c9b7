"""Typed FP16 ONNX with FP32 islands where FP16 would overflow or lose the attention.

ELAN's attention is softmax(q·qᵀ) with no 1/sqrt(d) scale. Measured with
`python bench/activation_ranges.py`: on natural images the logits reach ~900 (FP16 spacing
there is 0.5, enough to change attention weights visibly) and on uniform noise ~2e8, far past
FP16's 65504, which turns the softmax into NaN. So the q·qᵀ MatMul and the Softmax stay FP32;
everything else (convs, value MatMul, data movement) runs in FP16. Inputs and outputs stay
float32 so every engine keeps the same interface.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from elan_deploy.fileio import atomic_path

FP16_KEEP_FP32 = "fp16_keep_fp32"  # metadata key listing the FP32 island nodes


def attention_logit_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of MatMul nodes whose output feeds a Softmax (the q·qᵀ logits)."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    islands = []
    for node in model.graph.node:
        if node.op_type != "MatMul":
            continue
        frontier, hops = list(node.output), 0
        while frontier and hops < 3:  # allow a Mul/Cast between the MatMul and the Softmax
            nxt = [c for out in frontier for c in consumers.get(out, [])]
            if any(c.op_type == "Softmax" for c in nxt):
                islands.append(node.name)
                break
            frontier = [o for c in nxt if c.op_type in {"Mul", "Div", "Cast", "Reshape"} for o in c.output]
            hops += 1
    return islands


def ensure_node_names(model: onnx.ModelProto) -> None:
    for i, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"


def convert_to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """A typed FP16 copy of `model`: FP32 I/O, FP32 attention logits and softmax."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.ModelProto.FromString(model.SerializeToString())
    ensure_node_names(model)
    islands = attention_logit_nodes(model)
    fp16 = convert_float_to_float16(
        model, keep_io_types=True, op_block_list=["Softmax", "Resize", "Range"], node_block_list=islands, disable_shape_infer=False
    )
    drop_fp16_round_trips(fp16)
    entry = fp16.metadata_props.add()
    entry.key, entry.value = FP16_KEEP_FP32, ",".join(["Softmax"] + islands)
    return fp16


def drop_fp16_round_trips(model: onnx.ModelProto) -> int:
    """Remove Cast(to fp16) → Cast(to fp32) pairs between two FP32 islands; returns how many.

    The converter casts every blocked node's output to FP16 and every blocked node's input back
    to FP32, so the logits MatMul fed the Softmax through an FP16 tensor: logits past 65504
    (hard-edged images reach ~87 000) became Inf and the image NaN. Without the pair the
    island is FP32 end to end.
    """
    fp16, fp32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT

    def cast_to(node: onnx.NodeProto) -> int | None:
        return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None

    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_outputs = {o.name for o in model.graph.output}
    dropped: list[onnx.NodeProto] = []
    for down in [n for n in model.graph.node if cast_to(n) == fp16]:
        ups = consumers.get(down.output[0], [])
        if not ups or down.output[0] in graph_outputs or any(cast_to(u) != fp32 for u in ups):
            continue
        for up in ups:
            for user in consumers.get(up.output[0], []):
                for i, name in enumerate(user.input):
                    if name == up.output[0]:
                        user.input[i] = down.input[0]
            for out in model.graph.output:
                if out.name == up.output[0]:
                    raise ValueError("a graph output is a Cast round trip; not expected in an ELAN export")
            dropped.append(up)
        dropped.append(down)
    for node in dropped:
        model.graph.node.remove(node)
    return sum(1 for n in dropped if cast_to(n) == fp16)


def fp16_tensors_between(model: onnx.ModelProto, start_op: str = "MatMul", end_op: str = "Softmax") -> list[str]:
    """FP16 tensors on any path from a logits `start_op` to a `end_op` (empty when the island is FP32)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    dtypes = {v.name: v.type.tensor_type.elem_type for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    producers = {o: n for n in model.graph.node for o in n.output}
    found = []
    for softmax in (n for n in model.graph.node if n.op_type == end_op):
        name = softmax.input[0]
        for _ in range(8):
            if dtypes.get(name) == onnx.TensorProto.FLOAT16:
                found.append(name)
            node = producers.get(name)
            if node is None or node.op_type == start_op:
                break
            name = node.input[0]
    return found


def write_fp16(onnx_path: Path, out: Path) -> Path:
    fp16 = convert_to_fp16(onnx.load(str(onnx_path)))
    with atomic_path(out) as tmp:
        onnx.save(fp16, str(tmp))
    return out
