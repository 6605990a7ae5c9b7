"""GMSA with each shifted-window partition and merge as one Gather of pixels ("gather" windows).

For a given H x W, `roll` + window partition is a fixed permutation of the pixels, and merge +
unroll its inverse. Written as one `Gather` over the flattened channel-last pixels it is one
data pass, where the reference form costs two Slice/Concat pairs per roll plus a
Reshape/Transpose/Reshape per partition (OpenVINO executed 1096 data-movement nodes for it).

The indices are computed in the graph from H and W (Range/Mul/Add/Mod on int64, shared by all
GMSAs of a forward pass), so the exported file keeps dynamic H and W; a runtime that compiles a
static shape (OpenVINO `reshape`, TensorRT, ONNX Runtime with a static export) folds them into
constants, and the executed graph holds just the Gathers.

The projections stay one 1x1 conv each per GMSA, as in the reshape form (project_inp with its
BatchNorm folded, project_out): per GMSA the graph moves data in one Transpose + Reshape + Split
in, one Gather per group each way, and one Concat + Transpose out. Windows arrive as
(b, windows, ws², c): the rank-4 (batch, heads, sequence, head size) layout of the opset-23
`Attention` op and of OpenVINO's fused attention, without a Transpose.
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
    and put back differs.
    """

    def forward(  # type: ignore[override]  # takes window indices instead of a WindowGeometry
        self, x: torch.Tensor, shared: list[torch.Tensor] | None, indices: tuple[WindowIndex, ...]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if not self.calc_attn and shared is None:
            raise ElanDeployError("a GMSA that reuses attention needs the state of the block's first GMSA")
        batch, _, height, width = x.shape
        tokens = self.project_inp(x).permute(0, 2, 3, 1).reshape(batch, height * width, sum(self.split_chns))
        merged: list[torch.Tensor] = []
        state: list[torch.Tensor] = []
        for g, (group, index) in enumerate(zip(torch.split(tokens, self.split_chns, dim=-1), indices)):
            windows = group[:, index.forward]  # b, windows, ws², c: roll + partition in one Gather
            out, kept = self._attend(windows, g, shared)
            state.append(kept)
            merged.append(out.reshape(batch, -1, self.out_chns[g])[:, index.inverse])  # b, H, W, c: merge + unroll
        return self.project_out(torch.cat(merged, dim=-1).permute(0, 3, 1, 2)), state
