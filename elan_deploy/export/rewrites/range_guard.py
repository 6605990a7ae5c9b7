"""The range guard's clamps placed in the deploy graph (see `elan_deploy.model.range_guard`).

Each reference site maps to the deploy module that computes the same tensor:

    body.B.modules_lfe.lfe_I.convJ.shift_conv.conv1x1 -> body.B.lfes.I.convJ (any shift strategy)
    body.B.modules_gmsa.gmsa_I.project_inp        -> body.B.gmsas.I.project_inp (BatchNorm folded in)
    body.B.modules_gmsa.gmsa_I.project_out        -> body.B.gmsas.I.project_out
    tail.0                                        -> tail (add_mean folded in: the range moves with it)

The tail conv of the deploy graph already adds the RGB mean (`mean_shift.fold_output_affine`),
and `add_mean` is an identity plus a per-colour offset, so the tail's clamp moves by that offset:
min/max commute with adding a constant. The clamps are explicit `Clamped` modules, so they show
in the module tree and export as Max + Min after each Conv (runtimes fuse them into the conv).
"""

from __future__ import annotations

import re

import numpy as np
import torch
from torch import nn

from elan_deploy.errors import ElanDeployError
from elan_deploy.model.range_guard import ChannelClamp, Clamped, RangeGuard, replace_module

_LFE = re.compile(r"^body\.(\d+)\.modules_lfe\.lfe_(\d+)\.(conv[01])\.shift_conv\.conv1x1$")
_GMSA = re.compile(r"^body\.(\d+)\.modules_gmsa\.gmsa_(\d+)\.(project_inp|project_out)$")


def deploy_site(site: str) -> str:
    """The deploy module name computing the tensor of reference site `site`."""
    if site == "tail.0":
        return "tail"
    if m := _LFE.match(site):
        return f"body.{m[1]}.lfes.{m[2]}.{m[3]}"
    if m := _GMSA.match(site):
        return f"body.{m[1]}.gmsas.{m[2]}.{m[3]}"
    raise ElanDeployError(f"range guard site '{site}' has no place in the deploy graph")


def _tail_offset(add_mean: nn.Conv2d, channels: int, scale: int) -> np.ndarray:
    """Per tail-channel offset that `add_mean` adds after PixelShuffle (colour c ← channels c·s²…)."""
    weight = add_mean.weight.detach().double()[:, :, 0, 0]
    if not torch.equal(weight, torch.eye(weight.shape[0], dtype=torch.float64)):
        raise ElanDeployError("the range guard needs add_mean to be an offset (identity weight); export with --no-guard")
    bias = add_mean.bias.detach().double().numpy() if add_mean.bias is not None else np.zeros(weight.shape[0])
    return np.repeat(bias, scale * scale)[:channels]


def guard_deploy_model(deploy: nn.Module, guard: RangeGuard, add_mean: nn.Conv2d, scale: int) -> nn.Module:
    """Wrap every site's deploy module in place with its clamp; returns `deploy`."""
    for site in guard.sites:
        name = deploy_site(site)
        low, high = guard.low[site].astype(np.float64), guard.high[site].astype(np.float64)
        if site == "tail.0":
            offset = _tail_offset(add_mean, low.shape[0], scale)
            low, high = low + offset, high + offset
        replace_module(deploy, name, Clamped(deploy.get_submodule(name), ChannelClamp(low, high)))
    return deploy
