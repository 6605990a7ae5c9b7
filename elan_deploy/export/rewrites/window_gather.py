"""GMSA with each shifted-window partition and merge as one Gather of pixels ("gather" windows).

For a given H x W, `roll` + window partition is a fixed permutation of the pixels, and merge +
unroll its inverse. Written as one `Gather` over the flattened channel-last pixels it is one
data pass, where the reference form costs two Slice/Concat pairs per roll plus a
Reshape/Transpose/Reshape per partition (OpenVINO lists 1096 data-movement nodes for it at
1x3x192x320 and executes 614 of them).

The indices are computed in the graph from H and W (Range/Mul/Add/Mod on int64, shared by all
GMSAs of a forward pass), so the exported file keeps dynamic H and W; a runtime that compiles a
static shape (OpenVINO `reshape`, TensorRT, ONNX Runtime with a static export) folds them into
constants, and the executed graph holds just the Gathers.

The projections stay one 1x1 conv each per GMSA, as in the reshape form (project_inp with its
BatchNorm folded, project_out). Between them, per GMSA, OpenVINO executes one Gather per group
in (the projected pixels are read as rows of one group, pixel · groups + group, so no Split of
the groups comes first), the q/v Split of a first GMSA, and one Gather out over the
concatenated group outputs, which merges and unrolls all groups at once; the Reshapes and the
Concat run in place. Windows arrive as (b, windows, ws², c): the rank-4 (batch, heads,
sequence, head size) layout of the opset-23 `Attention` op and of OpenVINO's fused attention,
without a Transpose.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from elan_deploy.errors import ElanDeployError
from elan_deploy.export.rewrites.attention import DeployGMSA

__all__ = ["GatherGMSA", "WindowIndex", "window_index", "window_indices"]


class WindowIndex(NamedTuple):
    """The two permutations of one window size and shift at one H x W.

    `forward` (nh·nw, ws²): flat pixel (h·W + w) read by each token of each window, after a
    cyclic shift by `shift` pixels (roll by −shift, as ELAN's shifted windows do).
    `inverse` (H, W): token position (window · ws² + token) that lands on each pixel.
    """

    forward: torch.Tensor
    inverse: torch.Tensor


def _arange(n: torch.Tensor | int) -> torch.Tensor:
    return torch.arange(n, dtype=torch.int64)


def window_index(height: torch.Tensor | int, width: torch.Tensor | int, wsize: int, shift: int) -> WindowIndex:
    """Gather indices of roll(−shift) + partition and of merge + roll(+shift) for one window size.

    `height`/`width` may be traced sizes: the arithmetic then becomes graph ops, folded to
    constants by any runtime that fixes the shape. 0 ≤ shift < ws ≤ H, W.
    """
    rows, cols = height // wsize, width // wsize
    tap = _arange(wsize)
    # forward[(i·nw + j), (dh·ws + dw)] = ((i·ws + dh + s) mod H)·W + (j·ws + dw + s) mod W
    src_h = (_arange(rows)[:, None, None, None] * wsize + tap[None, None, :, None] + shift) % height
    src_w = (_arange(cols)[None, :, None, None] * wsize + tap[None, None, None, :] + shift) % width
    forward = (src_h * width + src_w).reshape(-1, wsize * wsize)
    # inverse[h, w]: the token that came from pixel (h, w), i.e. h' = (h − s) mod H = i·ws + dh
    dst_h = (_arange(height) + (height - shift)) % height
    dst_w = (_arange(width) + (width - shift)) % width
    window = (dst_h // wsize)[:, None] * cols + (dst_w // wsize)[None, :]
    token = (dst_h % wsize)[:, None] * wsize + (dst_w % wsize)[None, :]
    return WindowIndex(forward, window * (wsize * wsize) + token)


def window_indices(height: torch.Tensor | int, width: torch.Tensor | int, window_sizes: tuple[int, ...], shifted: bool) -> tuple[WindowIndex, ...]:
    """One `WindowIndex` per window size (shift = ws / 2 when `shifted`, as ELAN's odd ELABs)."""
    return tuple(window_index(height, width, ws, ws // 2 if shifted else 0) for ws in window_sizes)


class GatherGMSA(DeployGMSA):
    """Same math as `elan.GMSA`; input and output NCHW, windows by Gather (see the module doc).

    Projections, folded BatchNorm and attention are `DeployGMSA`'s; only how windows are cut out
    and put back differs. The projected pixels are read as one row per group (pixel · groups +
    group), so each group's windows come out of one Gather with no Split of the groups before it,
    and the groups' outputs go back to pixels through one Gather over their concatenation.
    """

    def __init__(self, reference, attention: str = "shared") -> None:  # noqa: ANN001  (an elan.GMSA)
        super().__init__(reference, attention)
        if len(set(self.split_chns)) != 1 or len(set(self.out_chns)) != 1:
            raise ElanDeployError(f"gather windows need window groups of equal width; got channels {self.split_chns}")

    def forward(  # type: ignore[override]  # takes window indices instead of a WindowGeometry
        self, x: torch.Tensor, shared: list[torch.Tensor] | None, indices: tuple[WindowIndex, ...]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if not self.calc_attn and shared is None:
            raise ElanDeployError("a GMSA that reuses attention needs the state of the block's first GMSA")
        batch, _, height, width = x.shape
        pixels, groups = height * width, len(indices)
        rows = self.project_inp(x).permute(0, 2, 3, 1).reshape(batch, pixels * groups, self.split_chns[0])
        merged: list[torch.Tensor] = []
        state: list[torch.Tensor] = []
        for g, index in enumerate(indices):
            windows = rows[:, index.forward * groups + g]  # b, windows, ws², c: roll + partition in one Gather
            out, kept = self._attend(windows, g, shared)
            state.append(kept)
            merged.append(out.reshape(batch, pixels, self.out_chns[g]))
        # token t of group g is row g·H·W + t of the concatenation: one Gather merges and unrolls all groups
        inverse = torch.stack([index.inverse + g * pixels for g, index in enumerate(indices)], dim=-1)
        merged_pixels = torch.cat(merged, dim=1)[:, inverse].reshape(batch, height, width, sum(self.out_chns))
        return self.project_out(merged_pixels.permute(0, 3, 1, 2)), state
