"""The reference graph's tensors in graph order, with their op and their size at the diff's shape.

The size lets the layer diff mark as many tensors per run as fit a memory budget: with every
tensor of ELAN-light marked at 1x3x192x320, one run returns about 13.5 GB of activations
(1502 tensors; each attention map alone is 63 MB). ONNX's own shape inference stops at the
export's computed Reshape shapes, ONNX Runtime's symbolic shape inference resolves them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

FLOAT_TYPES = {onnx.TensorProto.FLOAT: 4, onnx.TensorProto.FLOAT16: 2, onnx.TensorProto.BFLOAT16: 2, onnx.TensorProto.DOUBLE: 8}


@dataclass(frozen=True)
class GraphTensor:
    name: str
    op: str  # the op type of the node that produces it
    depth: int  # that node's index in the graph's (topological) node order
    nbytes: int | None  # at the diff's input shape; None when shape inference could not tell


def _with_static_input(model: onnx.ModelProto, shape: tuple[int, ...]) -> onnx.ModelProto:
    model = onnx.ModelProto.FromString(model.SerializeToString())
    initializers = {t.name for t in model.graph.initializer}
    graph_input = next(i for i in model.graph.input if i.name not in initializers)
    for dim, value in zip(graph_input.type.tensor_type.shape.dim, shape):
        dim.ClearField("dim_param")
        dim.dim_value = int(value)
    return model


def _value_infos(model: onnx.ModelProto, shape: tuple[int, ...]) -> dict[str, onnx.ValueInfoProto]:
    """Types and (where it can) static shapes of every tensor, for the given input shape."""
    static = _with_static_input(model, shape)
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            inferred = SymbolicShapeInference.infer_shapes(static, auto_merge=True)
    except Exception:  # noqa: BLE001 - an op it does not know: fall back to ONNX's inference (types, fewer shapes)
        inferred = None
    if inferred is None:
        inferred = onnx.shape_inference.infer_shapes(static)
    graph = inferred.graph
    return {v.name: v for v in list(graph.value_info) + list(graph.output)}


def _nbytes(info: onnx.ValueInfoProto | None) -> int | None:
    if info is None:
        return None
    dims = info.type.tensor_type.shape.dim
    if not all(d.HasField("dim_value") for d in dims):
        return None
    size = FLOAT_TYPES.get(info.type.tensor_type.elem_type, 4)
    return int(np.prod([d.dim_value for d in dims], dtype=np.int64)) * size


def graph_tensors(path: Path, shape: tuple[int, ...]) -> list[GraphTensor]:
    """Every floating-point tensor a node produces, in graph order (the graph's own output included)."""
    model = onnx.load(str(path))
    infos = _value_infos(model, shape)
    tensors = []
    for depth, node in enumerate(model.graph.node):
        for name in node.output:
            if not name:
                continue
            info = infos.get(name)
            elem_type = info.type.tensor_type.elem_type if info is not None else onnx.TensorProto.FLOAT
            if elem_type not in FLOAT_TYPES:
                continue  # shape arithmetic (int64), Q/DQ integers, masks: not activations
            tensors.append(GraphTensor(name, node.op_type, depth, _nbytes(info)))
    return tensors


def onnx_tensor_names(path: Path) -> set[str]:
    """The tensor names an ONNX graph produces (node outputs)."""
    model = onnx.load(str(path), load_external_data=False)
    return {name for node in model.graph.node for name in node.output if name}


def plan_chunks(tensors: list[GraphTensor], budget_bytes: int) -> list[list[GraphTensor]]:
    """Consecutive groups of tensors whose sizes add up to at most `budget_bytes` (at least one each).

    A tensor of unknown size counts as the largest known one.
    """
    known = [t.nbytes for t in tensors if t.nbytes is not None]
    fallback = max(known) if known else budget_bytes
    chunks: list[list[GraphTensor]] = []
    current: list[GraphTensor] = []
    used = 0
    for tensor in tensors:
        size = tensor.nbytes if tensor.nbytes is not None else fallback
        if current and used + size > budget_bytes:
            chunks.append(current)
            current, used = [], 0
        current.append(tensor)
        used += size
    if current:
        chunks.append(current)
    return chunks
