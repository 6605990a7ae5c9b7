"""What OpenVINO's CPU plugin runs for a compiled model: executed nodes per layer type.

The export rewrites are judged on the data movement the runtime executes, not on the ONNX
graph: OpenVINO folds constant paths, turns Reshapes into views and lets Split/Concat write in
place, and those nodes stay listed in the runtime model with `execTimeMcs == "not_executed"`.
Counting listed nodes (as the first window-profile did: 1096 for reshape windows) therefore
mixes free views with real copies; `executed_only=True` counts the nodes that run.
"""

from __future__ import annotations

from collections import Counter

# Layer types (the CPU plugin's `layerType`) that only move data.
DATA_MOVEMENT: tuple[str, ...] = ("Reshape", "Transpose", "Split", "Concatenation", "Reorder", "Gather")
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
