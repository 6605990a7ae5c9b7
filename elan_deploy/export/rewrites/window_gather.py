"""GMSA with each shifted-window partition and merge as one Gather of pixels ("gather" windows).

For a given H x W, `roll` + window partition is a fixed permutation of the pixels, and merge +
unroll its inverse. Written as one `Gather` over the flattened channel-last pixels it is one
data pass, where the reference form costs two Slice/Concat pairs per roll plus a
Reshape/Transpose/Reshape per partition (OpenVINO executed 1096 data-movement nodes for it).

The indices are computed in the graph from H and W (Range/Mul/Add/Mod on int64, shared by all
GMSAs of a forward pass), so the exported file keeps dynamic H and W; a runtime that compiles a
static shape (OpenVINO `reshape`, TensorRT, ONNX Runtime with a static export) folds them into
constants, and the executed graph holds just the Gathers.

The projections move into the window layout too, so no channel Split or Concat remains: each
window group gathers the GMSA's input pixels (b, H·W, C) straight into windows
(b, windows, ws², C), projects q and v with per-group MatMuls (project_inp's folded weights,
sliced), attends, gathers its output back to (b, H, W, c_g) and multiplies it by its slice of
project_out; the groups' contributions add up (a sum of the three slices equals project_out on
the concatenation). Per GMSA the graph moves data in one Transpose + Reshape in, and one
Gather + Reshape + Gather per group, one Transpose out. Windows arrive as (b, windows, ws², c):
the rank-4 (batch, heads, sequence, head size) layout of the opset-23 `Attention` op and of
OpenVINO's fused attention, without a Transpose.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from elan_deploy.errors import ElanDeployError
from elan_deploy.export.rewrites.batchnorm import fold_batchnorm
from elan_deploy.export.rewrites.attention import check_gmsa_reference
from elan_deploy.export.strategies import check_attention_strategy
from elan_deploy.model.elan import GMSA

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


class GroupProjections(nn.Module):
    """Per-group slices of a 1x1 conv as `x @ W + b` MatMuls on channel-last windows.

    A module of its own so that the exported nodes keep the conv's scope
    (`…/gmsas.1/project_inp/MatMul_2`): INT8 layer groups and reports find them by that name.
    """

    def __init__(self, weights: dict[str, torch.Tensor], biases: dict[str, torch.Tensor]) -> None:
        super().__init__()
        for key, weight in weights.items():
            self.register_buffer(f"w_{key}", weight.t().contiguous().clone())  # (in, out)
        for key, bias in biases.items():
            self.register_buffer(f"b_{key}", bias.clone())
        self.biased = frozenset(biases)

    def forward(self, x: torch.Tensor, key: str) -> torch.Tensor:
        y = torch.matmul(x, getattr(self, f"w_{key}"))
        return y + getattr(self, f"b_{key}") if key in self.biased else y


class GatherGMSA(nn.Module):
    """Same math as `elan.GMSA`; input and output NCHW, windows by Gather (see the module doc)."""

    def __init__(self, reference: GMSA, attention: str = "shared") -> None:
        super().__init__()
        check_gmsa_reference(reference)
        self.attention = check_attention_strategy(attention)
        self.calc_attn = reference.calc_attn
        self.shifted = reference.shifts > 0
        self.window_sizes = tuple(reference.window_sizes)
        split = [int(c) for c in reference.split_chns]
        folded = fold_batchnorm(reference.project_inp[0], reference.project_inp[1])
        w_in, b_in = folded.weight.detach()[:, :, 0, 0], folded.bias.detach()
        w_out = reference.project_out.weight.detach()[:, :, 0, 0]
        self.channels = w_in.shape[1]
        # per group: rows of project_inp for q (first half of the group) and v (second half)
        starts = [sum(split[:g]) for g in range(len(split))]
        q_rows = [slice(s, s + c // 2) for s, c in zip(starts, split)] if self.calc_attn else []
        v_rows = [slice(s + c // 2, s + c) for s, c in zip(starts, split)] if self.calc_attn else [slice(s, s + c) for s, c in zip(starts, split)]
        out_width = [r.stop - r.start for r in v_rows]
        out_cols = [slice(sum(out_width[:g]), sum(out_width[: g + 1])) for g in range(len(split))]
        rows = {f"v{g}": r for g, r in enumerate(v_rows)} | {f"q{g}": r for g, r in enumerate(q_rows)}
        self.project_inp = GroupProjections({k: w_in[r] for k, r in rows.items()}, {k: b_in[r] for k, r in rows.items()})
        self.project_out = GroupProjections({f"o{g}": w_out[:, cols] for g, cols in enumerate(out_cols)}, {})
        bias = reference.project_out.bias
        self.register_buffer("bo", (bias.detach() if bias is not None else torch.zeros(w_out.shape[0], dtype=w_out.dtype)).clone())

    def forward(
        self, x: torch.Tensor, shared: list[torch.Tensor] | None, indices: tuple[WindowIndex, ...]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if not self.calc_attn and shared is None:
            raise ElanDeployError("a GMSA that reuses attention needs the state of the block's first GMSA")
        batch, channels, height, width = x.shape
        tokens = x.permute(0, 2, 3, 1).reshape(batch, height * width, channels)
        total: torch.Tensor | None = None
        state: list[torch.Tensor] = []
        for g, index in enumerate(indices):
            windows = tokens[:, index.forward]  # b, windows, ws², C: roll + partition in one Gather
            v = self.project_inp(windows, f"v{g}")
            out, kept = self._attend(windows, v, g, shared)
            state.append(kept)
            merged = out.reshape(batch, -1, out.shape[-1])[:, index.inverse]  # b, H, W, c: merge + unroll
            part = self.project_out(merged, f"o{g}")
            total = part if total is None else total + part
        assert total is not None
        return (total + self.bo).permute(0, 3, 1, 2), state

    def _attend(self, windows: torch.Tensor, v: torch.Tensor, g: int, shared: list[torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.calc_attn:
            q = self.project_inp(windows, f"q{g}")
            if self.attention == "shared":
                atn = torch.matmul(q, q.transpose(-2, -1)).softmax(dim=-1)
                return torch.matmul(atn, v), atn
            return F.scaled_dot_product_attention(q, q, v, scale=1.0), q
        assert shared is not None
        if self.attention == "shared":
            return torch.matmul(shared[g], v), shared[g]
        q = shared[g]
        return F.scaled_dot_product_attention(q, q, v, scale=1.0), q
