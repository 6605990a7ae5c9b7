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
  low + span · q' back right behind the Clip, in NCHW, as one BatchNormalization (`ChannelAffine`;
  scale 1 and offset 0 on the value channels). OpenVINO fuses it into the conv with the Clip as
  post-ops, ONNX Runtime runs it as one NCHWc depthwise pass; the multiply-add on the channel-last
  query windows it replaces ran as 36 Subgraphs on OpenVINO and 72 broadcasting passes on ONNX
  Runtime (`python -m experiments.openvino_profile`, `python -m experiments.onnxruntime_profile`).
- tail (add_mean folded in: its range moves with the offset): 48 channels on the LR grid, once;
  it keeps its Max and Min. Folded as the queries (Clip, then a `ChannelAffine`), it saved
  OpenVINO one Subgraph, but OpenVINO's INT8 engine, which runs the float tail in bf16 on AMX,
  then fell under the stress set's 95 % line of clean flat QR pixels (BENCHMARKS.md).

OpenVINO then executes the nodes of the unguarded graph plus the tail's one Subgraph: the Clips
and the query restores ride on the convolutions.

A channel whose range is one value (span 0) gets zero weights and its value as the offset. The
result computes `guard_reference(reference, guard)` up to float rounding
(`tests/model/test_range_guard.py`).
"""

from __future__ import annotations

import re

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from elan_deploy.errors import ElanDeployError
from elan_deploy.model.range_guard import ChannelClamp, Clamped, RangeGuard, clamp_bounds, replace_module

_LFE = re.compile(r"^body\.(\d+)\.modules_lfe\.lfe_(\d+)\.conv0\.shift_conv\.conv1x1$")
_GMSA = re.compile(r"^body\.(\d+)\.modules_gmsa\.gmsa_(\d+)\.project_inp$")


class ChannelAffine(nn.Module):
    """y = scale[c] · x + offset[c] per channel of an N,C,H,W tensor, exported as one
    BatchNormalization (mean 0, variance 1, epsilon 0, so the affine is exact): every runtime has
    a kernel for it, and a conv's post-op fusion (OpenVINO) takes it in."""

    def __init__(self, scale: np.ndarray, offset: np.ndarray) -> None:
        super().__init__()
        channels = len(scale)
        self.register_buffer("scale", torch.as_tensor(np.asarray(scale, dtype=np.float32)).clone())
        self.register_buffer("offset", torch.as_tensor(np.asarray(offset, dtype=np.float32)).clone())
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.mean, self.var, self.scale, self.offset, training=False, momentum=0.0, eps=0.0)


class UnitClipped(nn.Module):
    """A layer whose output is clipped to [0, 1] (ONNX: Conv + Clip, fused by the runtimes),
    then optionally mapped back per channel by `restore`."""

    def __init__(self, layer: nn.Module, restore: ChannelAffine | None = None) -> None:
        super().__init__()
        self.layer = layer
        self.restore = restore

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.clamp(self.layer(x), 0.0, 1.0)
        return y if self.restore is None else self.restore(y)


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
    """project_inp → Clip(0, 1) of the normalised q and v; v's affine into project_out, q's restored behind the Clip."""
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
    restore = None
    if gmsa.calc_attn:  # queries back to low + span · q'; values stay normalised (scale 1, offset 0)
        q = np.concatenate(queries)
        scale, offset = np.ones_like(span), np.zeros_like(span)
        scale[q], offset[q] = span[q], low[q]
        restore = ChannelAffine(scale, offset)
    gmsa.project_inp = UnitClipped(gmsa.project_inp, restore)


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
