"""GMSA rewritten for export: folded BN, static rolls, rank-5 channel-last windows and an
explicit choice of how the attention of a block is shared.

ELAN computes softmax(q·qᵀ) once per ELAB (in its first GMSA) and reuses the maps in the
following GMSA(s). Two export strategies:

- "shared": the first GMSA hands its attention maps to the next, as the reference does. Least
  arithmetic; the maps (windows × ws² × ws² per group) stay live between the two GMSAs.
- "sdpa":   every GMSA calls `scaled_dot_product_attention(q, q, v, scale=1.0)`; the second
  GMSA recomputes softmax(q·qᵀ) from the first one's q instead of storing the map, so a
  runtime with a fused attention kernel can use it for every GMSA.
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from elan_deploy.errors import ElanDeployError
from elan_deploy.export.rewrites.batchnorm import fold_batchnorm
from elan_deploy.export.rewrites.roll import static_roll
from elan_deploy.export.rewrites.windows import merge_windows, merge_windows_rank4, partition_windows, partition_windows_rank4
from elan_deploy.export.strategies import ATTENTION_STRATEGIES, check_attention_strategy, check_window_strategy
from elan_deploy.model.elan import GMSA


__all__ = ["ATTENTION_STRATEGIES", "DeployGMSA", "SharedState", "WindowGeometry"]


class WindowGeometry(NamedTuple):
    """H, W and W/ws per window size of the current feature map.

    Computed once per forward pass by DeployELAN and handed to every GMSA, so the exported graph
    reads the input shape once instead of in each of the ~300 Reshapes.
    """

    height: int
    width: int
    columns: tuple[int, ...]

    @classmethod
    def of(cls, x: torch.Tensor, window_sizes: tuple[int, ...]) -> "WindowGeometry":
        height, width = x.shape[2], x.shape[3]
        return cls(height, width, tuple(width // ws for ws in window_sizes))


# What a GMSA hands to the next one of its block: per window-size group, the attention map
# ("shared") or the query windows ("sdpa").
SharedState = list[torch.Tensor]


def check_gmsa_reference(reference: GMSA) -> None:
    """The rewrites fold project_inp's BatchNorm into its conv: refuse any other layout."""
    if len(reference.project_inp) != 2 or not isinstance(reference.project_inp[1], nn.BatchNorm2d):
        raise ElanDeployError("GMSA.project_inp must be Conv2d followed by BatchNorm2d")


class DeployGMSA(nn.Module):
    """Same math as `elan.GMSA`; inputs and outputs NCHW, channel-last inside.

    `windows` is "reshape" (windows batched with the images, rank-5 partitions) or "rank4"
    (the batch kept apart, at most four axes after it; see `rewrites.windows`).
    """

    def __init__(self, reference: GMSA, attention: str = "shared", windows: str = "reshape") -> None:
        super().__init__()
        check_gmsa_reference(reference)
        self.attention = check_attention_strategy(attention)
        rank4 = check_window_strategy(windows) == "rank4"
        self._partition = partition_windows_rank4 if rank4 else partition_windows
        self._merge = merge_windows_rank4 if rank4 else merge_windows
        self.calc_attn = reference.calc_attn
        self.shifted = reference.shifts > 0
        self.window_sizes = tuple(reference.window_sizes)
        self.split_chns = [int(c) for c in reference.split_chns]
        # channels per group after attention: q and v split a group in half when it computes attention
        self.out_chns = [c // 2 if self.calc_attn else c for c in self.split_chns]
        self.project_inp = fold_batchnorm(reference.project_inp[0], reference.project_inp[1])
        self.project_out = copy.deepcopy(reference.project_out).requires_grad_(False)
        # per window group, q = low + span · q' when the range guard normalised project_inp
        self.query_restore: nn.ModuleList | None = None

    def forward(
        self, x: torch.Tensor, shared: SharedState | None = None, geometry: WindowGeometry | None = None
    ) -> tuple[torch.Tensor, SharedState]:
        if not self.calc_attn and shared is None:
            raise ElanDeployError("a GMSA that reuses attention needs the state of the block's first GMSA")
        height, width, columns = geometry if geometry is not None else WindowGeometry.of(x, self.window_sizes)
        groups = torch.split(self.project_inp(x).permute(0, 2, 3, 1), self.split_chns, dim=-1)
        ys: list[torch.Tensor] = []
        state: SharedState = []
        for idx, group in enumerate(groups):
            wsize = self.window_sizes[idx]
            if self.shifted:
                group = static_roll(group, (-wsize // 2, -wsize // 2), (1, 2))
            windows = self._partition(group, wsize, self.split_chns[idx], columns[idx])
            out, kept = self._attend(windows, idx, shared)
            state.append(kept)
            y = self._merge(out, wsize, height, width, self.out_chns[idx], columns[idx])
            if self.shifted:
                y = static_roll(y, (wsize // 2, wsize // 2), (1, 2))
            ys.append(y)
        return self.project_out(torch.cat(ys, dim=-1).permute(0, 3, 1, 2)), state

    def _attend(self, windows: torch.Tensor, idx: int, shared: SharedState | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention of one group's windows; returns (output, what the next GMSA needs)."""
        if self.calc_attn:
            q, v = windows.chunk(2, dim=-1)
            if self.query_restore is not None:
                q = self.query_restore[idx](q)
            if self.attention == "shared":
                atn = (q @ q.transpose(-2, -1)).softmax(dim=-1)
                return atn @ v, atn
            return F.scaled_dot_product_attention(q, q, v, scale=1.0), q
        assert shared is not None
        if self.attention == "shared":
            return shared[idx] @ windows, shared[idx]
        q = shared[idx]
        return F.scaled_dot_product_attention(q, q, windows, scale=1.0), q
