"""Export settings as data (one dataclass, validated once, recorded in the ONNX metadata)."""

from __future__ import annotations

from dataclasses import dataclass

from elan_deploy.errors import ElanDeployError
from elan_deploy.export.strategies import (
    ATTENTION_STRATEGIES,
    DEFAULT_OPSET,
    SHIFT_STRATEGIES,
    DEFAULT_WINDOWS,
    WINDOW_STRATEGIES,
    check_attention_strategy,
    check_opset,
    check_shift_strategy,
    check_window_strategy,
)


@dataclass(frozen=True)
class ExportConfig:
    """How to turn a checkpoint into an ONNX file.

    `trace_size` is the (H, W) of the dummy input used for tracing; H and W stay dynamic in the
    file, so any multiple of 16 works. It is unequal on purpose so H and W cannot be confused.
    `verify` runs the file in ONNX Runtime against the reference ELAN before it is renamed into
    place, so an inexact export never lands on disk.
    `windows` picks how shifted windows are cut and merged (see `strategies.WINDOW_STRATEGIES`).
    There is no static-shape export: the window indices are computed from H and W in the graph,
    and a runtime that builds a static engine folds them into constants itself.
    """

    shift: str = "depthwise"
    attention: str = "shared"
    windows: str = DEFAULT_WINDOWS
    opset: int = DEFAULT_OPSET
    dynamic_batch: bool = True
    simplify: bool = True
    verify: bool = True
    trace_size: tuple[int, int] = (32, 48)
    tolerance: float = 1e-3

    def __post_init__(self) -> None:
        check_shift_strategy(self.shift)
        check_attention_strategy(self.attention)
        check_window_strategy(self.windows)
        check_opset(self.opset)
        h, w = self.trace_size
        if h <= 0 or w <= 0 or h % 16 or w % 16:
            raise ElanDeployError(f"trace_size {h}x{w} must be positive multiples of 16")


__all__ = ["ATTENTION_STRATEGIES", "DEFAULT_OPSET", "ExportConfig", "SHIFT_STRATEGIES", "WINDOW_STRATEGIES"]
