"""The ELAN network, exactly as in the paper and the official code.

This module is the numerical reference every exported engine is compared against, so it keeps
the official structure and parameter names (a `state_dict` of it *is* the official checkpoint
layout). Export-friendly rewrites live in `elan_deploy.export`, never here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from elan_deploy.model.config import ELANConfig

SHIFT_GROUPS = 5  # channel groups of a shift-conv: right, left, down, up, identity


def shift_kernel(channels: int) -> torch.Tensor:
    """One-hot depthwise 3x3 taps that shift each fifth of the channels by one pixel.

    Group 0 reads its right neighbour, 1 its left, 2 the pixel below, 3 the pixel above and the
    rest (including any remainder) stays in place, as in the official `ShiftConv2d1`.
    """
    g = channels // SHIFT_GROUPS
    weight = torch.zeros(channels, 1, 3, 3)
    weight[0 * g : 1 * g, 0, 1, 2] = 1.0
    weight[1 * g : 2 * g, 0, 1, 0] = 1.0
    weight[2 * g : 3 * g, 0, 2, 1] = 1.0
    weight[3 * g : 4 * g, 0, 0, 1] = 1.0
    weight[4 * g :, 0, 1, 1] = 1.0
    return weight


class MeanShift(nn.Conv2d):
    """Adds or subtracts the dataset RGB mean (a fixed 1x1 conv, stored in checkpoints)."""

    def __init__(self, rgb_range: float, rgb_mean: tuple[float, float, float], sign: int) -> None:
        super().__init__(3, 3, kernel_size=1)
        self.weight.data = torch.eye(3).view(3, 3, 1, 1)
        self.bias.data = sign * rgb_range * torch.tensor(rgb_mean)
        for p in self.parameters():
            p.requires_grad = False


class ShiftConv2d1(nn.Module):
    """Fixed per-group one-pixel shift (depthwise one-hot 3x3) followed by a 1x1 conv."""

    def __init__(self, inp_channels: int, out_channels: int) -> None:
        super().__init__()
        self.inp_channels = inp_channels
        self.weight = nn.Parameter(shift_kernel(inp_channels), requires_grad=False)
        self.conv1x1 = nn.Conv2d(inp_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(x, self.weight, bias=None, stride=1, padding=1, groups=self.inp_channels)
        return self.conv1x1(y)


class ShiftConv2d(nn.Module):
    """Wrapper kept only so parameter names match the official checkpoints."""

    def __init__(self, inp_channels: int, out_channels: int) -> None:
        super().__init__()
        self.shift_conv = ShiftConv2d1(inp_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shift_conv(x)


class LFE(nn.Module):
    """Local feature extraction: shift-conv, ReLU, shift-conv."""

    def __init__(self, channels: int, exp_ratio: int) -> None:
        super().__init__()
        self.conv0 = ShiftConv2d(channels, channels * exp_ratio)
        self.conv1 = ShiftConv2d(channels * exp_ratio, channels)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.act(self.conv0(x)))


def window_partition(x: torch.Tensor, wsize: int) -> torch.Tensor:
    """b c (h dh) (w dw) -> (b h w) (dh dw) c  (einops layout of the official code)."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // wsize, wsize, w // wsize, wsize)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b * (h // wsize) * (w // wsize), wsize * wsize, c)


def window_merge(y: torch.Tensor, wsize: int, b: int, h: int, w: int) -> torch.Tensor:
    """(b h w) (dh dw) c -> b c (h dh) (w dw); inverse of `window_partition`."""
    c = y.shape[-1]
    y = y.view(b, h // wsize, w // wsize, wsize, wsize, c)
    return y.permute(0, 5, 1, 3, 2, 4).reshape(b, c, h, w)


class GMSA(nn.Module):
    """Group-wise multi-scale self-attention.

    Channels are split into one group per window size; each group attends inside
    non-overlapping windows with softmax(q·qᵀ) (no scaling, no LayerNorm). With `shifts` the
    windows are cyclically shifted by half a window. A GMSA with `calc_attn=False` projects only
    values and reuses the attention maps of the first GMSA of its block (shared attention).
    """

    def __init__(self, channels: int, shifts: int, window_sizes: tuple[int, ...], calc_attn: bool) -> None:
        super().__init__()
        self.shifts = shifts
        self.window_sizes = tuple(window_sizes)
        self.calc_attn = calc_attn
        groups = len(self.window_sizes)
        factor = 2 if calc_attn else 1
        self.split_chns = [channels * factor // groups] * groups
        self.project_inp = nn.Sequential(
            nn.Conv2d(channels, channels * factor, kernel_size=1),
            nn.BatchNorm2d(channels * factor),
        )
        self.project_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(
        self, x: torch.Tensor, prev_atns: list[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b, _, h, w = x.shape
        xs = torch.split(self.project_inp(x), self.split_chns, dim=1)
        ys: list[torch.Tensor] = []
        atns: list[torch.Tensor] = []
        for idx, x_ in enumerate(xs):
            wsize = self.window_sizes[idx]
            if self.shifts > 0:
                x_ = torch.roll(x_, shifts=(-wsize // 2, -wsize // 2), dims=(2, 3))
            windows = window_partition(x_, wsize)
            if prev_atns is None:
                q, v = windows.chunk(2, dim=-1)
                atn = (q @ q.transpose(-2, -1)).softmax(dim=-1)
            else:
                v, atn = windows, prev_atns[idx]
            y_ = window_merge(atn @ v, wsize, b, h, w)
            if self.shifts > 0:
                y_ = torch.roll(y_, shifts=(wsize // 2, wsize // 2), dims=(2, 3))
            ys.append(y_)
            atns.append(atn)
        return self.project_out(torch.cat(ys, dim=1)), atns


class ELAB(nn.Module):
    """Efficient long-range attention block: (1 + shared_depth) LFE/GMSA pairs sharing attention."""

    def __init__(self, channels: int, exp_ratio: int, shifts: int, window_sizes: tuple[int, ...], shared_depth: int) -> None:
        super().__init__()
        self.shared_depth = shared_depth
        self.modules_lfe = nn.ModuleDict(
            {f"lfe_{i}": LFE(channels, exp_ratio) for i in range(1 + shared_depth)}
        )
        self.modules_gmsa = nn.ModuleDict(
            {
                f"gmsa_{i}": GMSA(channels, shifts, window_sizes, calc_attn=(i == 0))
                for i in range(1 + shared_depth)
            }
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        atn: list[torch.Tensor] | None = None
        for i in range(1 + self.shared_depth):
            x = self.modules_lfe[f"lfe_{i}"](x) + x
            y, atn = self.modules_gmsa[f"gmsa_{i}"](x, atn)
            x = y + x
        return x


class ELAN(nn.Module):
    """ELAN / ELAN-light for one scale. Input N,3,H,W in 0..255; output N,3,sH,sW.

    Any H and W are accepted: the input is reflect-padded to a multiple of the windows' least
    common multiple and the output cropped back, as in the official code.
    """

    def __init__(self, config: ELANConfig) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        self.sub_mean = MeanShift(config.rgb_range, config.rgb_mean, sign=-1)
        self.add_mean = MeanShift(config.rgb_range, config.rgb_mean, sign=1)
        self.head = nn.Sequential(nn.Conv2d(3, c, kernel_size=3, padding=1))
        self.body = nn.Sequential(
            *[
                ELAB(c, config.r_expand, i % 2, config.window_sizes, config.n_share)
                for i in range(config.num_elabs)
            ]
        )
        self.tail = nn.Sequential(
            nn.Conv2d(c, 3 * config.scale**2, kernel_size=3, padding=1),
            nn.PixelShuffle(config.scale),
        )

    @property
    def scale(self) -> int:
        return self.config.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        m = self.config.window_multiple
        x = F.pad(x, (0, (m - w % m) % m, 0, (m - h % m) % m), mode="reflect")
        x = self.sub_mean(x)
        x = self.head(x)
        x = self.body(x) + x
        x = self.add_mean(self.tail(x))
        return x[:, :, : h * self.scale, : w * self.scale]
