"""Fold an eval-mode BatchNorm2d into the convolution that feeds it.

GMSA.project_inp is Conv1x1 → BatchNorm. At inference BatchNorm is a fixed per-channel affine
map, so it can be absorbed into the conv's weight and bias: one op fewer per GMSA, and no
BatchNormalization node for runtimes (or INT8 calibrators) to treat specially.
"""

from __future__ import annotations

import torch
from torch import nn

from elan_deploy.errors import ElanDeployError


@torch.no_grad()
def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """Return a new conv computing `bn(conv(x))` with `bn`'s running statistics.

    The fold is done in float64 and rounded once, so the folded conv is as close to the
    two-op original as float32 allows. Neither input module is modified.
    """
    if bn.running_mean is None or bn.running_var is None:
        raise ElanDeployError("cannot fold a BatchNorm without running statistics (track_running_stats=False)")
    if bn.num_features != conv.out_channels:
        raise ElanDeployError(f"BatchNorm has {bn.num_features} channels but the conv outputs {conv.out_channels}")
    factor = bn.running_var.double().add(bn.eps).rsqrt()
    if bn.weight is not None:
        factor = factor * bn.weight.double()
    shift = -bn.running_mean.double() * factor
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    bias = conv.bias.double() if conv.bias is not None else torch.zeros(conv.out_channels, dtype=torch.float64)

    fused = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
        dilation=conv.dilation, groups=conv.groups, bias=True, padding_mode=conv.padding_mode,
        dtype=conv.weight.dtype,
    )
    fused.weight.copy_((conv.weight.double() * factor.view(-1, 1, 1, 1)).to(conv.weight.dtype))
    fused.bias.copy_((bias * factor + shift).to(conv.weight.dtype))
    fused.requires_grad_(False)
    return fused.eval()
