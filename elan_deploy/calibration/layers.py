"""ELAN's quantizable layers, grouped the way the mixed-precision search keeps them in float.

The exported ONNX names nodes after module scopes (`/body.3/gmsas.1/project_inp/Conv`), so
every Conv/MatMul falls in one group:

    head                     the first 3x3 conv (its input is the image itself)
    tail                     the last 3x3 conv before the pixel shuffle
    body.B.lfe               both LFEs of ELAB B: shift (depthwise one-hot) convs + 1x1 convs
    body.B.project_inp       both GMSA input projections (1x1 convs; BN folded in)
    body.B.attn_qk           q·qᵀ MatMuls (those feeding a Softmax)
    body.B.attn_av           attention·v MatMuls (the second GMSA reuses the first's map)
    body.B.project_out       both GMSA output projections

A group holds every quantized consumer of the tensors it quantizes (a Softmax output feeds the
attn_av MatMuls of both GMSAs of a block; one shift-tap tensor feeds both LFEs), so floating a
group really removes its Q/DQ. Nodes of an ONNX file not exported by elan-deploy fall back
to one group per node.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import onnx

from elan_deploy.calibration.recipes import QUANTIZED_OP_TYPES

_BODY = re.compile(r"^/body\.(\d+)/(lfes|gmsas)\.\d+/(?:(project_inp|project_out)/)?")
KINDS: tuple[str, ...] = ("head", "tail", "lfe", "project_inp", "attn_qk", "attn_av", "project_out")


@dataclass(frozen=True)
class LayerGroup:
    name: str  # e.g. "body.3.attn_av"
    kind: str  # one of KINDS, or "node"
    nodes: tuple[str, ...]


def _softmax_inputs(model: onnx.ModelProto) -> set[str]:
    return {n.input[0] for n in model.graph.node if n.op_type == "Softmax"}


def group_of(node: onnx.NodeProto, softmax_inputs: set[str]) -> tuple[str, str]:
    """(group name, kind) of one Conv/MatMul node."""
    name = node.name
    if name.startswith("/head/"):
        return "head", "head"
    if name.startswith("/tail/"):
        return "tail", "tail"
    m = _BODY.match(name)
    if m is None:
        return name, "node"
    block, sub, proj = m.groups()
    if sub == "lfes":
        kind = "lfe"
    elif proj:
        kind = proj
    elif node.op_type == "MatMul":
        kind = "attn_qk" if node.output[0] in softmax_inputs else "attn_av"
    else:
        return name, "node"
    return f"body.{block}.{kind}", kind


def layer_groups(model: onnx.ModelProto, op_types: Iterable[str] = QUANTIZED_OP_TYPES) -> list[LayerGroup]:
    """The quantizable nodes of `model`, grouped, in graph order of each group's first node."""
    ops = set(op_types)
    softmax_inputs = _softmax_inputs(model)
    groups: dict[str, tuple[str, list[str]]] = {}
    for node in model.graph.node:
        if node.op_type in ops:
            name, kind = group_of(node, softmax_inputs)
            groups.setdefault(name, (kind, []))[1].append(node.name)
    return [LayerGroup(name, kind, tuple(nodes)) for name, (kind, nodes) in groups.items()]


def quantizable_nodes(model: onnx.ModelProto, op_types: Iterable[str] = QUANTIZED_OP_TYPES) -> list[str]:
    ops = set(op_types)
    return [n.name for n in model.graph.node if n.op_type in ops]


def ensure_node_names(model: onnx.ModelProto) -> None:
    """Give unnamed nodes stable names (`nodes_to_exclude` and the metadata refer to names)."""
    for i, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
