"""ELAN's shift-conv (one-hot depthwise 3x3 then 1x1) in three interchangeable forms.

Which is fastest depends on the runtime (DESIGN.md: depthwise won on CPU, dense may win on
GPU tensor cores), so the export keeps all three switchable and the benchmark picks:

- "depthwise": the trained form, a depthwise 3x3 conv with one-hot taps, then the 1x1 conv.
- "slice":     the shift as data movement only: zero-pad once, slice each channel group at its
               offset, concat, then the 1x1 conv. Zero FLOPs for the shift.
- "dense":     shift and 1x1 folded into one dense 3x3 conv,
               W[o, i, ky, kx] = W1x1[o, i] · onehot[i, ky, kx].

All three use the same zero padding at the borders as the reference, so they agree everywhere,
borders included.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from elan_deploy.errors import ElanDeployError
from elan_deploy.export.strategies import SHIFT_STRATEGIES, check_shift_strategy
from elan_deploy.model.elan import ShiftConv2d1



@dataclass(frozen=True)
class ShiftRun:
    """Channels [start, stop) all read input pixel (y + dy - 1, x + dx - 1)."""

    start: int
    stop: int
    dy: int
    dx: int


def shift_runs(taps: torch.Tensor) -> tuple[ShiftRun, ...]:
    """Group consecutive channels of a one-hot depthwise kernel (C,1,3,3) by their tap."""
    if taps.dim() != 4 or taps.shape[1:] != (1, 3, 3):
        raise ElanDeployError(f"shift taps must have shape (C, 1, 3, 3), got {tuple(taps.shape)}")
    flat = taps.detach().reshape(taps.shape[0], 9)
    if not bool(((flat == 0) | (flat == 1)).all()) or not bool((flat.sum(dim=1) == 1).all()):
        raise ElanDeployError("shift taps are not one-hot; this is not ELAN's fixed shift pattern")
    positions = flat.argmax(dim=1).tolist()
    runs: list[ShiftRun] = []
    for channel, pos in enumerate(positions):
        dy, dx = divmod(pos, 3)
        if runs and (runs[-1].dy, runs[-1].dx) == (dy, dx):
            runs[-1] = ShiftRun(runs[-1].start, channel + 1, dy, dx)
        else:
            runs.append(ShiftRun(channel, channel + 1, dy, dx))
    return tuple(runs)


def _copy_conv(conv: nn.Conv2d) -> nn.Conv2d:
    return copy.deepcopy(conv).requires_grad_(False).eval()


class DepthwiseShiftConv(nn.Module):
    """The trained form: depthwise one-hot 3x3 (zero padding) then the 1x1 conv."""

    def __init__(self, reference: ShiftConv2d1) -> None:
        super().__init__()
        self.register_buffer("taps", reference.weight.detach().clone())
        self.conv1x1 = _copy_conv(reference.conv1x1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shifted = F.conv2d(x, self.taps, bias=None, stride=1, padding=1, groups=self.taps.shape[0])
        return self.conv1x1(shifted)


class SliceShiftConv(nn.Module):
    """Zero-FLOP shift: pad by one pixel of zeros, slice each channel run at its tap, concat.

    The slice ends are negative constants (e.g. `1:-1`), so no shape arithmetic enters the graph.
    Runs that do not move (the centre tap) are read from the unpadded input.
    """

    def __init__(self, reference: ShiftConv2d1) -> None:
        super().__init__()
        self.runs = shift_runs(reference.weight)
        self.conv1x1 = _copy_conv(reference.conv1x1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = F.pad(x, (1, 1, 1, 1))
        parts = []
        for run in self.runs:
            if (run.dy, run.dx) == (1, 1):
                parts.append(x[:, run.start : run.stop])
            else:
                rows = slice(run.dy, run.dy - 2 if run.dy < 2 else None)
                cols = slice(run.dx, run.dx - 2 if run.dx < 2 else None)
                parts.append(padded[:, run.start : run.stop, rows, cols])
        return self.conv1x1(torch.cat(parts, dim=1))


class DenseShiftConv(nn.Module):
    """Shift folded into the 1x1 conv: one dense 3x3 conv (9x the MACs, one op, GPU-friendly)."""

    def __init__(self, reference: ShiftConv2d1) -> None:
        super().__init__()
        pointwise = reference.conv1x1
        taps = reference.weight.detach().double()[:, 0]  # C, 3, 3
        weight = pointwise.weight.detach().double()[:, :, 0, 0, None, None] * taps[None]
        self.conv = nn.Conv2d(
            pointwise.in_channels, pointwise.out_channels, 3, padding=1, bias=pointwise.bias is not None,
            dtype=pointwise.weight.dtype,
        )
        with torch.no_grad():
            self.conv.weight.copy_(weight)
            if pointwise.bias is not None:
                self.conv.bias.copy_(pointwise.bias.detach())
        self.conv.requires_grad_(False).eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


__all__ = ["SHIFT_STRATEGIES", "DenseShiftConv", "DepthwiseShiftConv", "ShiftRun", "SliceShiftConv", "build_shift_conv", "shift_runs"]

_BUILDERS: dict[str, type[nn.Module]] = {
    "depthwise": DepthwiseShiftConv,
    "slice": SliceShiftConv,
    "dense": DenseShiftConv,
}


def build_shift_conv(reference: ShiftConv2d1, strategy: str = "depthwise") -> nn.Module:
    """Rewrite one reference `ShiftConv2d1` in the named strategy (a new module; the reference is untouched)."""
    return _BUILDERS[check_shift_strategy(strategy)](reference).eval()
