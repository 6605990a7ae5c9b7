"""What OpenVINO's CPU plugin runs for a compiled model: executed nodes per layer type.

The export rewrites are judged on the data movement the runtime executes, not on the ONNX
graph: OpenVINO folds constant paths, turns Reshapes into views and lets Split/Concat write in
place, and those nodes stay listed in the runtime model with `execTimeMcs == "not_executed"`.
Counting listed nodes (as the first window-profile did: 1096 for reshape windows) therefore
mixes free views with real copies; `executed_only=True` counts the nodes that run.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import NamedTuple

# Layer types (the CPU plugin's `layerType`) that only move data.
DATA_MOVEMENT: tuple[str, ...] = ("Reshape", "Transpose", "Split", "Concatenation", "Reorder", "Gather")
# Layer types that do the network's arithmetic. Depthwise convolutions also run as "Convolution";
# in this model they are ELAN's one-hot shifts, so `NodeTimes` keeps their time apart.
COMPUTE: tuple[str, ...] = ("Convolution", "MatMul", "Softmax")
_NOT_NODES = frozenset({"Input", "Output", "Parameter", "Result", "Const", "Constant"})


def layer_counts(compiled, executed_only: bool = False) -> Counter:  # noqa: ANN001  (an ov.CompiledModel)
    """Nodes per `layerType` in the runtime model of `compiled`.

    `executed_only` keeps the nodes that ran: call it after one inference on a model compiled
    with `PERF_COUNT`, whose runtime model then marks the others "not_executed".
    """
    counts: Counter = Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        layer = info["layerType"].astype(str) if "layerType" in info else op.get_type_name()
        if layer in _NOT_NODES:
            continue
        if executed_only and ("execTimeMcs" not in info or info["execTimeMcs"].astype(str) == "not_executed"):
            continue
        counts[layer] += 1
    return counts


def data_movement(counts: Counter) -> int:
    """How many of `counts` are data-movement layers."""
    return sum(counts[t] for t in DATA_MOVEMENT)


class NodeKind(NamedTuple):
    """What tells executed nodes apart in time: layer type, output shape, kernel, output precision.

    The kernel name (`primitiveType`, e.g. `brgemm_avx512_I8`, `ref_any_bf16`) says whether the
    plugin ran a JIT kernel or its reference loop, and in which precision.
    """

    layer: str
    shape: str
    primitive: str
    precision: str


@dataclass
class NodeTimes:
    """Time per `layerType` of one inference, in µs, with the depthwise (shift) convolutions apart.

    Nodes run one after another, so the shares of this total are shares of the latency: the
    compute share is the floor that rewriting everything else (data movement, quantizers,
    shifts) can reach while the runtime's own convolution, MatMul and Softmax kernels stay.
    Fused Subgraphs count as non-compute: right for the INT8 quantizers of the default (shared
    map) export, wrong for an `--attention sdpa` export, whose attention OpenVINO fuses into them.
    """

    per_type_us: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    shift_us: float = 0.0  # depthwise convolutions, also counted in per_type_us["Convolution"]
    shift_nodes: int = 0
    subgraphs: list[tuple[str, float]] = field(default_factory=list)  # fused Subgraphs: (name, µs)
    # µs per kind of node: which kernel runs which tensor, e.g. an INT8 MatMul against a bf16 one
    per_kind_us: dict[NodeKind, float] = field(default_factory=lambda: defaultdict(float))
    per_kind_nodes: Counter = field(default_factory=Counter)

    @property
    def total_us(self) -> float:
        return sum(self.per_type_us.values())

    def compute_share(self) -> float:
        """Share of node time in convolutions (shifts excluded), MatMuls and Softmax."""
        compute = sum(self.per_type_us.get(t, 0.0) for t in COMPUTE) - self.shift_us
        return compute / self.total_us if self.total_us else 0.0


def node_times(compiled) -> NodeTimes:  # noqa: ANN001  (an ov.CompiledModel)
    """Per-type node times of the last inference of `compiled` (compiled with `PERF_COUNT`)."""
    times = NodeTimes()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "layerType" not in info or "execTimeMcs" not in info:
            continue
        try:
            us = float(info["execTimeMcs"].astype(str))
        except ValueError:  # "not_executed"
            continue
        layer = info["layerType"].astype(str)
        times.per_type_us[layer] += us
        kind = NodeKind(layer, str(op.get_output_partial_shape(0)) if op.get_output_size() else "",
                        info["primitiveType"].astype(str), info["outputPrecisions"].astype(str) if "outputPrecisions" in info else "")
        times.per_kind_us[kind] += us
        times.per_kind_nodes[kind] += 1
        if layer == "Convolution" and "_dw" in info["primitiveType"].astype(str):
            times.shift_us += us
            times.shift_nodes += 1
        if layer == "Subgraph":
            times.subgraphs.append((op.get_friendly_name(), us))
    return times
