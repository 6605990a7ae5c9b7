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
    entry = fp16.metadata_props.add()
    entry.key, entry.value = FP16_KEEP_FP32, ",".join(["Softmax"] + islands)
    return fp16


def write_fp16(onnx_path: Path, out: Path) -> Path:
    fp16 = convert_to_fp16(onnx.load(str(onnx_path)))
    with atomic_path(out) as tmp:
        onnx.save(fp16, str(tmp))
    return out
