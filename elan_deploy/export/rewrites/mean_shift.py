"""ELAN's MeanShift layers, rewritten without their 1x1 convs.

`sub_mean` cannot be folded into the head conv: the head pads with zeros, and a zero of the
mean-shifted input is a different value than a zero of the raw input, so border pixels would
change. It stays an explicit constant offset (one Add, exact). `add_mean` comes after the tail
conv and PixelShuffle, both linear per pixel, so it folds exactly into the tail conv's weights
and bias (RGB channel c of the output is tail channel block c·s² … (c+1)·s² − 1).
"""

from __future__ import annotations

import torch
from torch import nn

from elan_deploy.errors import ElanDeployError


def _affine_of(mean_shift: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, b) of a 1x1 colour conv y = A·x + b, in float64."""
    if mean_shift.kernel_size != (1, 1) or mean_shift.in_channels != mean_shift.out_channels:
        raise ElanDeployError("MeanShift must be a square 1x1 conv")
    weight = mean_shift.weight.detach().double()[:, :, 0, 0]
    bias = mean_shift.bias.detach().double() if mean_shift.bias is not None else torch.zeros(weight.shape[0], dtype=torch.float64)
    return weight, bias


class InputOffset(nn.Module):
    """x + offset[c] with a constant per-channel offset (`sub_mean` with its identity weight dropped)."""

    def __init__(self, offset: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("offset", offset.detach().view(1, -1, 1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.offset


def input_offset(sub_mean: nn.Conv2d) -> nn.Module:
    """`sub_mean` as `InputOffset` when its weight is the identity (always, for ELAN).

    A checkpoint whose MeanShift weight is not the identity keeps the 1x1 conv: still exact.
    """
    weight, bias = _affine_of(sub_mean)
    if torch.equal(weight, torch.eye(weight.shape[0], dtype=torch.float64)):
        return InputOffset(bias.to(sub_mean.weight.dtype))
    conv = nn.Conv2d(sub_mean.in_channels, sub_mean.out_channels, 1, dtype=sub_mean.weight.dtype)
    conv.load_state_dict(sub_mean.state_dict())
    return conv.requires_grad_(False).eval()


@torch.no_grad()
def fold_output_affine(tail_conv: nn.Conv2d, add_mean: nn.Conv2d, scale: int) -> nn.Conv2d:
    """Fold `add_mean(pixel_shuffle(tail_conv(x)))` into one conv followed by PixelShuffle.

    PixelShuffle(s) maps conv channel c·s² + j to output colour c, so a colour-space affine
    y = A·rgb + b becomes W'[a·s²+j] = Σ_c A[a,c]·W[c·s²+j] and b'[a·s²+j] = Σ_c A[a,c]·b[c·s²+j] + b[a].
    """
    a_mat, a_bias = _affine_of(add_mean)
    colours, s2 = a_mat.shape[0], scale * scale
    if tail_conv.out_channels != colours * s2:
        raise ElanDeployError(f"tail conv has {tail_conv.out_channels} channels; expected {colours}x{s2} for scale {scale}")
    w = tail_conv.weight.double().reshape(colours, s2, *tail_conv.weight.shape[1:])
    b = (tail_conv.bias.double() if tail_conv.bias is not None else torch.zeros(tail_conv.out_channels, dtype=torch.float64))
    b = b.reshape(colours, s2)
    new_w = torch.einsum("ac,cjikl->ajikl", a_mat, w).reshape_as(tail_conv.weight)
    new_b = (a_mat @ b + a_bias[:, None]).reshape(-1)

    fused = nn.Conv2d(
        tail_conv.in_channels, tail_conv.out_channels, tail_conv.kernel_size, stride=tail_conv.stride,
        padding=tail_conv.padding, dilation=tail_conv.dilation, groups=tail_conv.groups, bias=True,
        padding_mode=tail_conv.padding_mode, dtype=tail_conv.weight.dtype,
    )
    fused.weight.copy_(new_w.to(tail_conv.weight.dtype))
    fused.bias.copy_(new_b.to(tail_conv.weight.dtype))
    return fused.requires_grad_(False).eval()
