"""The range guard: the features that feed ELAN's ReLUs and its attention clamped to the range seen in training.

ELAN's attention is softmax(q·qᵀ) with no scale, so features that leave the range the network
was trained on grow without bound: on rendered text, QR codes and UI screenshots the logits reach
about a million (on all of T91 at most ~1.7 thousand), and every engine then paints a different
wrong picture. Clamping, per channel, to the [min, max] each tensor took on the calibration
images keeps them inside the trained range; on natural images, which stay inside it, the output
barely moves. INT8 engines did this by accident (their Q/DQ clip to calibrated ranges); the guard
gives the same bound to every precision.

A *site* is named after the reference module whose output is clamped:

- `body.B.modules_lfe.lfe_I.conv0.shift_conv.conv1x1`: the LFE's first conv, whose ReLU follows,
  so only its upper bound acts (`clamp_bounds`), in every ELAB but the last two (`guard_sites`);
- `body.B.modules_gmsa.gmsa_I.project_inp`, after its BatchNorm: the queries and values;
- `tail.0`, before PixelShuffle and `add_mean`: the output itself.

The LFE's second conv and `project_out` are not clamped: they are linear maps of clamped
features (the attention averages clamped values), so the residual stream they add to is bounded
already, and the two clamp kinds above can be folded into the convolutions around them
(`elan_deploy.export.rewrites.range_guard`), where a clamp on the residual stream cannot. On the
stress set (`elan_deploy.stress`; `python -m experiments.guard_placement`) this placement kept
raw outputs in −45..315 and text/UI/QR 100/100/96 % clean, as clamping every conv did; without the
query clamps QR fell to 86 %, without the LFE clamps to 91 %. Leaving the last two ELABs' LFEs
unclamped kept QR at 96 % and moved the worst downscaled-HR image against the paper model from
−0.47 dB (a QR code) to −0.017 dB.

`guard_reference` returns a guarded copy of the reference network for the PyTorch runtimes; the
export rewrite places the same clamps in the deploy graph. The ranges themselves are measured by
`elan_deploy.calibration.ranges`.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from elan_deploy.errors import ElanDeployError
from elan_deploy.model.elan import ELAN

RANGES_SCHEMA = "elan-deploy/range-guard/1"


#: How many of the last ELABs keep their LFEs unclamped: there the features turn high-contrast
#: edges into sharp output, and legitimate hard edges (text and QR rendered at the HR size, then
#: downscaled) leave T91's range without anything running away.
UNCLAMPED_LAST_LFE_BLOCKS = 2


def guard_sites(model: ELAN) -> list[str]:
    """The reference module names whose outputs are clamped, in execution order (see the module doc).

    The head is left out: it sees only pixels in 0..255, so its output is bounded by
    construction, and clamping it to T91's range only clipped saturated colours T91 lacks (in a
    development run pure cyan came out (0, 201, 233); flat blocks of primaries within 12 levels:
    33 % with the head clamped, 80 % without; text, QR and line art unchanged).

    The LFEs of the last `UNCLAMPED_LAST_LFE_BLOCKS` ELABs are left out too. Runaway features
    start early and are stopped there (the queries of every block stay clamped), while on
    downscaled HR renders the worst image lost 0.47 dB against the paper model with those LFEs
    clamped and 0.017 dB without (QR codes are as clean either way).
    `python -m experiments.guard_placement` measures both placements.
    """
    sites = []
    last_clamped_lfe = len(model.body) - UNCLAMPED_LAST_LFE_BLOCKS
    for b, block in enumerate(model.body):
        for i in range(1 + block.shared_depth):
            if b < last_clamped_lfe:
                sites.append(f"body.{b}.modules_lfe.lfe_{i}.conv0.shift_conv.conv1x1")
            sites.append(f"body.{b}.modules_gmsa.gmsa_{i}.project_inp")
    sites.append("tail.0")
    return sites


def feeds_relu(site: str) -> bool:
    """Whether a ReLU follows the site (an LFE's first conv): only its upper bound then acts."""
    return ".conv0." in site


def clamp_bounds(guard: RangeGuard, site: str) -> tuple[np.ndarray, np.ndarray]:
    """The per-channel [low, high] the guarded network applies at `site`.

    Before a ReLU the low bound is lowered to at most 0: clamp-then-ReLU is then ReLU-then-min
    with the high bound, which the export folds into the conv as one Clip(0, 1). A channel that
    stayed positive on every calibration image is not lifted off 0 by it; ReLU's own floor holds.
    """
    low, high = guard.low[site], guard.high[site]
    return (np.minimum(low, 0.0).astype(np.float32), high) if feeds_relu(site) else (low, high)


@dataclass(frozen=True, eq=False)
class RangeGuard:
    """Per-channel [low, high] of every guard site, and what they were measured on."""

    low: dict[str, np.ndarray]
    high: dict[str, np.ndarray]
    source: str  # e.g. "T91: 91 images, x4 bicubic LR"

    def __post_init__(self) -> None:
        if set(self.low) != set(self.high):
            raise ElanDeployError("range guard: low and high name different sites")
        for site in self.low:
            lo, hi = self.low[site], self.high[site]
            if lo.shape != hi.shape or lo.ndim != 1 or not (np.isfinite(lo).all() and np.isfinite(hi).all()) or (lo > hi).any():
                raise ElanDeployError(f"range guard: site '{site}' has malformed ranges; measure them again")

    @property
    def sites(self) -> list[str]:
        return list(self.low)

    def to_json(self) -> dict:
        return {
            "schema": RANGES_SCHEMA, "source": self.source,
            "sites": {s: {"low": _shortest(self.low[s]), "high": _shortest(self.high[s])} for s in self.low},
        }

    @classmethod
    def from_json(cls, data: dict) -> RangeGuard:
        if not isinstance(data, dict) or data.get("schema") != RANGES_SCHEMA:
            raise ElanDeployError(f"not a range-guard document (expected schema '{RANGES_SCHEMA}')")
        sites = data["sites"]
        return cls(
            {s: np.asarray(v["low"], dtype=np.float32) for s, v in sites.items()},
            {s: np.asarray(v["high"], dtype=np.float32) for s, v in sites.items()},
            str(data.get("source", "")),
        )

    @functools.cached_property
    def digest(self) -> str:
        """sha256 of the ranges (keys the engine cache through the model fingerprint)."""
        text = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def check_fits(self, model: ELAN) -> None:
        """Raise unless the ranges name exactly this network's sites with its channel counts."""
        modules = dict(model.named_modules())
        expected = guard_sites(model)
        if sorted(expected) != sorted(self.sites):
            raise ElanDeployError("range guard does not fit this network (other sites); measure the ranges for this checkpoint")
        for site in expected:
            if self.low[site].shape[0] != _out_channels(modules[site]):
                raise ElanDeployError(f"range guard does not fit this network at '{site}' (channel count); measure the ranges again")


def _shortest(values: np.ndarray) -> list[float]:
    """float32 values as the shortest decimals that read back to the same float32 (half the JSON)."""
    return [float(str(v)) for v in np.asarray(values, dtype=np.float32)]


def _out_channels(module: nn.Module) -> int:
    conv = module[0] if isinstance(module, nn.Sequential) else module
    return int(conv.out_channels)


class ChannelClamp(nn.Module):
    """y = min(max(x, low[c]), high[c]) per channel of an N,C,H,W tensor (ONNX: Max + Min)."""

    def __init__(self, low: np.ndarray, high: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("low", torch.as_tensor(np.asarray(low, dtype=np.float32)).view(1, -1, 1, 1).clone())
        self.register_buffer("high", torch.as_tensor(np.asarray(high, dtype=np.float32)).view(1, -1, 1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low, high = self.low, self.high
        if low.dtype != x.dtype:  # bf16 autocast: keep the activations in their own precision
            low, high = low.to(x.dtype), high.to(x.dtype)
        return torch.maximum(torch.minimum(x, high), low)


class Clamped(nn.Module):
    """A layer followed by its ChannelClamp."""

    def __init__(self, layer: nn.Module, clamp: ChannelClamp) -> None:
        super().__init__()
        self.layer = layer
        self.clamp = clamp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.clamp(self.layer(x))


def replace_module(root: nn.Module, name: str, module: nn.Module) -> None:
    """Set the submodule at dotted `name` (Sequential/ModuleList indices and ModuleDict keys too)."""
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    if isinstance(parent, (nn.Sequential, nn.ModuleList)) and child.isdigit():
        parent[int(child)] = module
    else:
        setattr(parent, child, module)


def guard_reference(model: ELAN, guard: RangeGuard) -> ELAN:
    """A copy of the reference ELAN with every site's output clamped (`clamp_bounds`; the model itself is unchanged)."""
    guard.check_fits(model)
    guarded = copy.deepcopy(model).eval()
    for site in guard.sites:
        replace_module(guarded, site, Clamped(guarded.get_submodule(site), ChannelClamp(*clamp_bounds(guard, site))))
    return guarded
