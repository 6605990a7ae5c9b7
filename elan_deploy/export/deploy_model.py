"""`DeployELAN`: the reference ELAN assembled from the export rewrites, same math.

Differences from `elan.ELAN`, each exact (see `elan_deploy.export.rewrites`):
- no reflect padding or cropping: H and W must already be multiples of the window multiple
  (16). The Upscaler pads and crops once for every runtime, so the graph stays static-friendly;
- `sub_mean` is a constant Add, `add_mean` is folded into the tail conv, BN into project_inp;
- shift-convs, rolls, windows and attention sharing use the chosen export strategies:
  "gather" windows (the default) cut and merge each window group with one Gather of pixels
  whose indices are computed once per forward pass from H and W (`rewrites.window_gather`);
  "reshape" windows keep the Slice/Concat rolls and Reshape/Transpose partitions of the paper's
  code; "rank4" windows are the reshape form with no tensor above four axes after the batch,
  which ncnn needs (`rewrites.windows`). OpenVINO executes 134 data-movement nodes for gather windows against 614 for reshape
  windows (f32, 1x3x192x320), and the engine measured 19 % faster in f32 and bf16 (BENCHMARKS.md).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from elan_deploy.errors import ElanDeployError
from elan_deploy.export.rewrites.attention import DeployGMSA, SharedState, WindowGeometry
from elan_deploy.export.rewrites.mean_shift import fold_output_affine, input_offset
from elan_deploy.export.rewrites.range_guard import guard_deploy_model
from elan_deploy.export.rewrites.roll import is_tracing
from elan_deploy.export.rewrites.shift_conv import build_shift_conv
from elan_deploy.export.rewrites.window_gather import GatherGMSA, WindowIndex, window_indices
from elan_deploy.export.strategies import (
    ATTENTION_STRATEGIES,
    DEFAULT_WINDOWS,
    SHIFT_STRATEGIES,
    WINDOW_STRATEGIES,
    check_attention_strategy,
    check_shift_strategy,
    check_window_strategy,
)
from elan_deploy.model.elan import ELAB, ELAN, LFE
from elan_deploy.model.range_guard import RangeGuard

__all__ = ["ATTENTION_STRATEGIES", "SHIFT_STRATEGIES", "WINDOW_STRATEGIES", "DeployELAN", "build_deploy_model", "check_input_shape"]


class DeployLFE(nn.Module):
    """Shift-conv, ReLU, shift-conv with the chosen shift strategy."""

    def __init__(self, reference: LFE, shift: str) -> None:
        super().__init__()
        self.conv0 = build_shift_conv(reference.conv0.shift_conv, shift)
        self.conv1 = build_shift_conv(reference.conv1.shift_conv, shift)
        self.act = nn.ReLU()  # the range guard folds it into conv0's Clip(0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.act(self.conv0(x)))


class DeployELAB(nn.Module):
    """(1 + shared_depth) LFE/GMSA pairs; the first GMSA's attention state feeds the others."""

    def __init__(self, reference: ELAB, shift: str, attention: str, windows: str = DEFAULT_WINDOWS) -> None:
        super().__init__()
        depth = 1 + reference.shared_depth
        self.windows = check_window_strategy(windows)
        self.shifted = reference.modules_gmsa["gmsa_0"].shifts > 0
        self.lfes = nn.ModuleList(DeployLFE(reference.modules_lfe[f"lfe_{i}"], shift) for i in range(depth))
        self.gmsas = nn.ModuleList(
            GatherGMSA(reference.modules_gmsa[f"gmsa_{i}"], attention)
            if windows == "gather"
            else DeployGMSA(reference.modules_gmsa[f"gmsa_{i}"], attention, windows)
            for i in range(depth)
        )

    def forward(
        self, x: torch.Tensor, geometry: WindowGeometry | None = None, indices: tuple[WindowIndex, ...] | None = None
    ) -> torch.Tensor:
        """`indices` (gather windows): this block's permutations; computed here when not given."""
        if self.windows == "gather" and indices is None:
            indices = window_indices(x.shape[2], x.shape[3], self.gmsas[0].window_sizes, self.shifted)
        state: SharedState | None = None
        for lfe, gmsa in zip(self.lfes, self.gmsas):
            x = lfe(x) + x
            y, state = gmsa(x, state, indices) if self.windows == "gather" else gmsa(x, state, geometry)
            x = y + x
        return x


def check_input_shape(x: torch.Tensor, multiple: int) -> None:
    """Raise a one-line ElanDeployError unless x is N,3,H,W with H and W multiples of `multiple`."""
    if x.dim() != 4 or x.shape[1] != 3:
        raise ElanDeployError(f"DeployELAN expects an N,3,H,W tensor, got shape {tuple(x.shape)}")
    height, width = int(x.shape[2]), int(x.shape[3])
    if height % multiple or width % multiple or height == 0 or width == 0:
        raise ElanDeployError(
            f"DeployELAN needs H and W that are multiples of {multiple}, got {height}x{width}; "
            f"pad the input first (the Upscaler does) or run the reference ELAN"
        )


class DeployELAN(nn.Module):
    """Export form of ELAN: N,3,H,W in 0..255 (H, W multiples of 16) → N,3,sH,sW."""

    def __init__(self, reference: ELAN, shift: str = "depthwise", attention: str = "shared", windows: str = DEFAULT_WINDOWS) -> None:
        super().__init__()
        self.shift = check_shift_strategy(shift)
        self.attention = check_attention_strategy(attention)
        self.windows = check_window_strategy(windows)
        self.config = reference.config
        self.scale = reference.config.scale
        self.window_multiple = reference.config.window_multiple
        self.window_sizes = tuple(reference.config.window_sizes)
        self.sub_mean = input_offset(reference.sub_mean)
        self.head = copy.deepcopy(reference.head[0]).requires_grad_(False)
        self.body = nn.ModuleList(DeployELAB(block, shift, attention, windows) for block in reference.body)
        self.tail = fold_output_affine(reference.tail[0], reference.add_mean, self.scale)
        self.upsample = nn.PixelShuffle(self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not is_tracing():
            check_input_shape(x, self.window_multiple)
        geometry = WindowGeometry.of(x, self.window_sizes)
        indices: dict[bool, tuple[WindowIndex, ...]] = {}
        if self.windows == "gather":  # once per forward pass: every block of a parity shares them
            indices = {s: window_indices(geometry.height, geometry.width, self.window_sizes, s) for s in (False, True)}
        x = self.head(self.sub_mean(x))
        skip = x
        for block in self.body:
            x = block(x, geometry, indices.get(block.shifted))
        return self.upsample(self.tail(x + skip))


def build_deploy_model(
    reference: ELAN, shift: str = "depthwise", attention: str = "shared", windows: str = DEFAULT_WINDOWS, guard: RangeGuard | None = None
) -> DeployELAN:
    """Rewrite a reference ELAN (eval mode; BN statistics are folded) into an eval-mode DeployELAN.

    With `guard`, the range guard's clamps are folded into the convolutions
    (`rewrites.range_guard`); the result then computes `guard_reference(reference, guard)`.
    The reference is not modified and shares no parameters with the result.
    """
    if reference.training:
        raise ElanDeployError("build_deploy_model needs an eval-mode ELAN (BatchNorm statistics are folded); call model.eval()")
    with torch.no_grad():
        deploy = DeployELAN(reference, shift, attention, windows).eval()
        if guard is not None:
            guard.check_fits(reference)
            guard_deploy_model(deploy, guard, reference.add_mean, reference.config.scale)
        return deploy
