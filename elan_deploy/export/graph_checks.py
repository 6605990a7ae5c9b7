"""Static checks of an ONNX graph: op inventory, IO specs, op domains, tensor ranks.

The rank check is what keeps the file convertible to Core ML (rank ≤ 5) and the domain check
what keeps it portable (no com.microsoft or custom ops). Ranks are read from ONNX shape
inference with the input made static, so the answer holds for that input shape; every tensor
whose rank inference could not determine is listed instead of silently passing.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import onnx

from elan_deploy.errors import ElanDeployError

DEFAULT_DOMAINS = frozenset({"", "ai.onnx"})
CORE_ML_MAX_RANK = 5


@dataclass(frozen=True)
class TensorSpec:
    """Name, element type and shape of a graph input or output (str dims are symbolic)."""

    name: str
    dtype: str
    shape: tuple[int | str | None, ...]

    def shape_text(self) -> str:
        return "x".join("?" if d is None else str(d) for d in self.shape)


@dataclass(frozen=True)
class RankReport:
    """Ranks of every tensor (inputs, initializers, node outputs) at one static input shape."""

    input_shapes: dict[str, tuple[int, ...]]
    max_rank: int
    max_rank_tensors: tuple[str, ...]  # a few tensors that reach `max_rank`
    unknown: tuple[str, ...] = field(default=())  # tensors whose rank inference could not tell

    def within(self, limit: int = CORE_ML_MAX_RANK) -> bool:
        return not self.unknown and self.max_rank <= limit


@dataclass(frozen=True)
class GraphSummary:
    """What `elan-deploy info` reports about a model, before the rank check."""

    node_count: int
    op_counts: dict[str, int]
    opsets: dict[str, int]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    metadata: dict[str, str]
    non_default_ops: tuple[str, ...]
    ir_version: int
    producer: str

    @property
    def default_domain_only(self) -> bool:
        return not self.non_default_ops


def _dtype_name(elem_type: int) -> str:
    return onnx.TensorProto.DataType.Name(elem_type).lower() if elem_type else "?"


def _spec(value: onnx.ValueInfoProto) -> TensorSpec:
    tensor = value.type.tensor_type
    dims: list[int | str | None] = []
    if tensor.HasField("shape"):
        for d in tensor.shape.dim:
            dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
    return TensorSpec(value.name, _dtype_name(tensor.elem_type), tuple(dims))


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Op type → count, most frequent first (ties by name); non-default domains as 'domain::Op'."""
    counts = Counter(n.op_type if n.domain in DEFAULT_DOMAINS else f"{n.domain}::{n.op_type}" for n in model.graph.node)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def non_default_domain_ops(model: onnx.ModelProto) -> tuple[str, ...]:
    return tuple(sorted({f"{n.domain}::{n.op_type}" for n in model.graph.node if n.domain not in DEFAULT_DOMAINS}))


def summarize(model: onnx.ModelProto) -> GraphSummary:
    initializer_names = {t.name for t in model.graph.initializer}
    return GraphSummary(
        node_count=len(model.graph.node),
        op_counts=op_counts(model),
        opsets={(o.domain or "ai.onnx"): o.version for o in model.opset_import},
        inputs=tuple(_spec(v) for v in model.graph.input if v.name not in initializer_names),
        outputs=tuple(_spec(v) for v in model.graph.output),
        metadata={p.key: p.value for p in model.metadata_props},
        non_default_ops=non_default_domain_ops(model),
        ir_version=model.ir_version,
        producer=f"{model.producer_name} {model.producer_version}".strip(),
    )


def parse_shape(text: str) -> tuple[int, ...]:
    """'1x3x192x320' → (1, 3, 192, 320)."""
    try:
        dims = tuple(int(part) for part in text.lower().replace(",", "x").split("x"))
    except ValueError:
        dims = ()
    if not dims or any(d <= 0 for d in dims):
        raise ElanDeployError(f"bad shape '{text}'; write it as NxCxHxW, e.g. 1x3x192x320")
    return dims


def _make_static(model: onnx.ModelProto, input_shapes: dict[str, Sequence[int]]) -> onnx.ModelProto:
    static = copy.deepcopy(model)
    del static.graph.value_info[:]  # re-infer everything for this shape
    inputs = {v.name: v for v in static.graph.input}
    for name, shape in input_shapes.items():
        if name not in inputs:
            raise ElanDeployError(f"model has no input '{name}' (inputs: {', '.join(inputs)})")
        dims = inputs[name].type.tensor_type.shape.dim
        if len(dims) != len(shape):
            raise ElanDeployError(f"input '{name}' has rank {len(dims)}, but shape {'x'.join(map(str, shape))} was given")
        for dim, size in zip(dims, shape):
            if dim.HasField("dim_value") and dim.dim_value != size:
                raise ElanDeployError(f"input '{name}' is fixed at {dim.dim_value} where {size} was given")
            dim.Clear()
            dim.dim_value = int(size)
    return static


def tensor_ranks(model: onnx.ModelProto, input_shapes: dict[str, Sequence[int]]) -> RankReport:
    """Infer shapes with the given inputs made static and return the largest tensor rank."""
    static = _make_static(model, input_shapes)
    try:
        inferred = onnx.shape_inference.infer_shapes(static, check_type=True, strict_mode=True, data_prop=True)
    except onnx.shape_inference.InferenceError as exc:
        raise ElanDeployError(f"shape inference failed at {input_shapes}: {str(exc).splitlines()[0][:200]}") from None
    ranks: dict[str, int] = {}
    for value in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        tensor = value.type.tensor_type
        if tensor.HasField("shape"):
            ranks[value.name] = len(tensor.shape.dim)
    for init in inferred.graph.initializer:
        ranks[init.name] = len(init.dims)
    unknown: list[str] = []
    for node in inferred.graph.node:
        unknown += [name for name in node.output if name and name not in ranks]
    max_rank = max(ranks.values(), default=0)
    top = tuple(name for name, rank in ranks.items() if rank == max_rank)[:5]
    return RankReport({k: tuple(int(d) for d in v) for k, v in input_shapes.items()}, max_rank, top, tuple(unknown))
