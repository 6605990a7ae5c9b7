"""The range guard's clamps folded into the deploy graph's convolutions (see `elan_deploy.model.range_guard`).

A per-channel clamp exports as a Max and a Min with per-channel constants, which neither ONNX
Runtime, OpenVINO nor ncnn fuses into the convolution before it: two elementwise passes over every
clamped tensor. A Clip whose
bounds are the same for every channel does fuse (ONNX Runtime's FusedConv, OpenVINO's conv
post-ops, ncnn's conv activation). So a clamped conv is rescaled to output
(y − low) / (high − low) per channel, clipped to [0, 1], and the scale and offset move into what
reads it:

- LFE: conv0 → ReLU → conv1. Its low bound is at most 0 (`clamp_bounds`), so clamp and ReLU are
  one Clip(0, 1) of y / high, and conv1 takes `high` into its input weights (its shift only moves
  channels and pads with zeros, which commutes with a per-channel scale).
- GMSA: values are averaged by softmax rows that sum to 1, so low + span · v' comes out of the
  attention as low + span · (attention of v'), and `project_out` takes span into its weights and
  W · low into its bias. Queries meet themselves in q·qᵀ, where neither folds: they get
  low + span · q' back by one multiply-add on the query half only (`QueryRestore`). Restored
  instead right behind the Clip, as one BatchNormalization that OpenVINO fuses into the conv,
  they cost OpenVINO nothing (36 Subgraphs fewer), but its INT8 engine, int8+bf16 on AMX, kept
  fewer flat QR pixels clean on the stress set (92.4 % against 94.1 % on 30 images), and that
  engine is `--runtime auto`'s pick on such CPUs (BENCHMARKS.md, "Restoring the queries behind
  the Clip").
- tail (add_mean folded in: its range moves with the offset): 48 channels on the LR grid, once;
  it keeps its Max and Min.

A channel whose range is one value (span 0) gets zero weights and its value as the offset. The
result computes `guard_reference(reference, guard)` up to float rounding
(`tests/model/test_range_guard.py`).
"""

from __future__ import annotations

import re

import numpy as np
import torch
from torch import nn

from elan_deploy.errors import ElanDeployError
from elan_deploy.model.range_guard import ChannelClamp, Clamped, RangeGuard, clamp_bounds, replace_module

_LFE = re.compile(r"^body\.(\d+)\.modules_lfe\.lfe_(\d+)\.conv0\.shift_conv\.conv1x1$")
_GMSA = re.compile(r"^body\.(\d+)\.modules_gmsa\.gmsa_(\d+)\.project_inp$")


class UnitClipped(nn.Module):
    """A layer whose output is clipped to [0, 1] (ONNX: Conv + Clip, fused by the runtimes)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(self.layer(x), 0.0, 1.0)


class QueryRestore(nn.Module):
    """q = low + span · q' on the channel-last query windows of one window group."""

    def __init__(self, low: np.ndarray, span: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("span", torch.as_tensor(np.asarray(span, dtype=np.float32)).clone())
        self.register_buffer("low", torch.as_tensor(np.asarray(low, dtype=np.float32)).clone())

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return q * self.span + self.low


def deploy_site(site: str) -> str:
    """The deploy module name computing the tensor of reference site `site`."""
    if site == "tail.0":
        return "tail"
    if m := _LFE.match(site):
        return f"body.{m[1]}.lfes.{m[2]}"
    if m := _GMSA.match(site):
        return f"body.{m[1]}.gmsas.{m[2]}"
    raise ElanDeployError(f"range guard site '{site}' has no place in the deploy graph")


def _weights_of(module: nn.Module) -> nn.Conv2d:
    """The conv holding a deploy shift-conv's weights (1x1 after the shift, or the dense 3x3)."""
    conv = getattr(module, "conv1x1", None) or getattr(module, "conv", None) or module
    if not isinstance(conv, nn.Conv2d) or conv.bias is None:
        raise ElanDeployError(f"the range guard cannot fold into {type(module).__name__}; export with --no-guard")
    return conv


def _normalise_outputs(conv: nn.Conv2d, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Rescale `conv` in place to output (y − low) / span per channel; returns span (0 where low == high)."""
    span = np.asarray(high, dtype=np.float64) - np.asarray(low, dtype=np.float64)
    live = torch.from_numpy(span > 0)
    divisor = torch.from_numpy(np.where(span > 0, span, 1.0))
    weight = conv.weight.detach().double() / divisor.view(-1, *[1] * (conv.weight.dim() - 1))
    bias = (conv.bias.detach().double() - torch.from_numpy(np.asarray(low, dtype=np.float64))) / divisor
    weight[~live], bias[~live] = 0.0, 0.0
    conv.weight.copy_(weight.to(conv.weight.dtype))
    conv.bias.copy_(bias.to(conv.bias.dtype))
    return np.where(span > 0, span, 0.0)


def _scale_inputs(conv: nn.Conv2d, scale: np.ndarray) -> None:
    conv.weight.copy_((conv.weight.detach().double() * torch.from_numpy(scale).view(1, -1, *[1] * (conv.weight.dim() - 2))).to(conv.weight.dtype))


def _fold_lfe(lfe: nn.Module, high: np.ndarray) -> None:
    """conv0 → Clip(0, 1) of y / max(high, 0); conv1 reads it times that scale."""
    span = _normalise_outputs(_weights_of(lfe.conv0), np.zeros_like(high), np.maximum(high, 0.0))
    _scale_inputs(_weights_of(lfe.conv1), span)
    lfe.conv0 = UnitClipped(lfe.conv0)
    lfe.act = nn.Identity()


def _fold_gmsa(gmsa: nn.Module, low: np.ndarray, high: np.ndarray) -> None:
    """project_inp → Clip(0, 1) of the normalised q and v; v's affine into project_out, q's restored."""
    span = _normalise_outputs(gmsa.project_inp, low, high)
    values, queries = [], []
    start = 0
    for width in gmsa.split_chns:
        half = width // 2 if gmsa.calc_attn else 0
        queries.append(np.arange(start, start + half))
        values.append(np.arange(start + half, start + width))
        start += width
    v = np.concatenate(values)  # project_out's input channels, in order
    out = gmsa.project_out
    weight = out.weight.detach().double()
    out.bias.copy_((out.bias.detach().double() + weight[:, :, 0, 0] @ torch.from_numpy(low[v].astype(np.float64))).to(out.bias.dtype))
    _scale_inputs(out, span[v])
    if gmsa.calc_attn:
        gmsa.query_restore = nn.ModuleList(QueryRestore(low[q], span[q]) for q in queries)
    gmsa.project_inp = UnitClipped(gmsa.project_inp)


def _tail_offset(add_mean: nn.Conv2d, channels: int, scale: int) -> np.ndarray:
    """Per tail-channel offset that `add_mean` adds after PixelShuffle (colour c ← channels c·s²…)."""
    weight = add_mean.weight.detach().double()[:, :, 0, 0]
    if not torch.equal(weight, torch.eye(weight.shape[0], dtype=torch.float64)):
        raise ElanDeployError("the range guard needs add_mean to be an offset (identity weight); export with --no-guard")
    bias = add_mean.bias.detach().double().numpy() if add_mean.bias is not None else np.zeros(weight.shape[0])
    return np.repeat(bias, scale * scale)[:channels]


def guard_deploy_model(deploy: nn.Module, guard: RangeGuard, add_mean: nn.Conv2d, scale: int) -> nn.Module:
    """Fold every site's clamp into `deploy` in place; returns `deploy`."""
    for site in guard.sites:
        name = deploy_site(site)
        low, high = (b.astype(np.float64) for b in clamp_bounds(guard, site))
        module = deploy.get_submodule(name)
        if site == "tail.0":
            offset = _tail_offset(add_mean, low.shape[0], scale)
            replace_module(deploy, name, Clamped(module, ChannelClamp(low + offset, high + offset)))
        elif _LFE.match(site):
            _fold_lfe(module, high)
        else:
            _fold_gmsa(module, low, high)
    return deploy
