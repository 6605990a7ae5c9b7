"""Opset ≥ 21 through the version converter, and the opset-23 `Attention` op.

The TorchScript exporter stops at opset 20 and lowers SDPA to Transpose→MatMul→Softmax→MatMul.
ONNX opset 23 has a single `Attention` op, and both ONNX Runtime 1.32 (CPU) and OpenVINO
2026.4 load and run it (checked against the reference in the tests). For opset ≥ 23 the
exported graph is converted with `onnx.version_converter` and every decomposed q·kᵀ attention
whose Softmax feeds exactly one MatMul (the "sdpa" strategy) becomes `Attention` with scale 1.0;
the "shared" strategy's maps feed two MatMuls and stay decomposed.

Measured on the 2-core EPYC (one 240×256×20 window batch, min of 40 runs): ORT 15.7 ms fused vs
15.2 ms decomposed, OpenVINO 13.2 vs 12.8 ms — no gain on this CPU, hence opset 17 stays the
default. The option exists for runtimes whose fused attention kernels do win (GPU EPs, NPUs);
`bench/export_strategies.py` measures it per runtime.
"""

from __future__ import annotations

from collections import defaultdict

import onnx
from onnx import helper, version_converter

from elan_deploy.errors import ElanDeployError

ATTENTION_OPSET = 23
TORCHSCRIPT_MAX_OPSET = 20
_KEY_TRANSPOSE = {3: [0, 2, 1], 4: [0, 1, 3, 2]}  # kᵀ of q·kᵀ per rank


def upgrade_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """Convert the default domain to `opset` (no-op if already there)."""
    current = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if current == opset:
        return model
    try:
        converted = version_converter.convert_version(model, opset)
    except Exception as exc:  # noqa: BLE001 - the converter raises RuntimeError/ConvertError
        raise ElanDeployError(f"cannot convert the graph to opset {opset}: {str(exc).splitlines()[0][:160]}") from None
    converted.ir_version = max(converted.ir_version, helper.find_min_ir_version_for(list(converted.opset_import)))
    return converted


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    ranks = {}
    for value in (*model.graph.input, *model.graph.value_info, *model.graph.output):
        if value.type.tensor_type.HasField("shape"):
            ranks[value.name] = len(value.type.tensor_type.shape.dim)
    return ranks


def _softmax_on_last_axis(node: onnx.NodeProto, rank: int | None) -> bool:
    axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), -1)
    return axis == -1 or (rank is not None and axis == rank - 1)


def fuse_attention(model: onnx.ModelProto) -> int:
    """Replace MatMul(q, Transpose(k)) → Softmax → MatMul(·, v) by Attention(q, k, v, scale=1).

    Rank-3 q/k/v (windows × tokens × channels) and rank-4 ones (batch × windows × tokens ×
    channels) with single-consumer intermediates are fused; returns the number of fused patterns. The model must be at opset ≥ 23.
    """
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < ATTENTION_OPSET:
        raise ElanDeployError(f"the Attention op needs opset {ATTENTION_OPSET}, the graph is at {opset}")
    graph = model.graph
    ranks = _ranks(model if len(graph.value_info) else onnx.shape_inference.infer_shapes(model))
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    outputs = {o.name for o in graph.output}

    replaced: dict[int, onnx.NodeProto] = {}
    dropped: set[int] = set()
    dropped_values: set[str] = set()
    for softmax in graph.node:
        if softmax.op_type != "Softmax":
            continue
        scores = producer.get(softmax.input[0])
        if scores is None or scores.op_type != "MatMul":
            continue
        transpose = producer.get(scores.input[1])
        if transpose is None or transpose.op_type != "Transpose":
            continue
        perm = next((list(helper.get_attribute_value(a)) for a in transpose.attribute if a.name == "perm"), None)
        users = consumers[softmax.output[0]]
        if len(users) != 1 or users[0].op_type != "MatMul" or users[0].input[0] != softmax.output[0]:
            continue
        mix = users[0]
        q, k, v = scores.input[0], transpose.input[0], mix.input[1]
        rank = ranks.get(q)
        # rank 3: (windows, tokens, c) with one head; rank 4: (batch, windows, tokens, c), the
        # op's own (batch, heads, sequence, head size) layout ("gather" windows)
        if rank not in _KEY_TRANSPOSE or perm != _KEY_TRANSPOSE[rank] or any(ranks.get(name) != rank for name in (k, v)):
            continue
        if not _softmax_on_last_axis(softmax, rank):
            continue
        inner = (transpose.output[0], scores.output[0], softmax.output[0])
        if any(len(consumers[name]) != 1 or name in outputs for name in inner):
            continue
        heads = {"q_num_heads": 1, "kv_num_heads": 1} if rank == 3 else {}
        replaced[id(mix)] = helper.make_node(
            "Attention", [q, k, v], [mix.output[0]], name=f"{mix.name}/Attention", scale=1.0, **heads,
        )
        dropped |= {id(transpose), id(scores), id(softmax)}
        dropped_values.update(inner)
    if not replaced:
        return 0
    nodes = [replaced.get(id(node), node) for node in graph.node if id(node) not in dropped]
    del graph.node[:]
    graph.node.extend(nodes)
    kept_info = [vi for vi in graph.value_info if vi.name not in dropped_values]
    del graph.value_info[:]
    graph.value_info.extend(kept_info)
    return len(replaced)
