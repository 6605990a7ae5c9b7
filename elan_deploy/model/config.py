"""Named ELAN configurations.

The two published variants differ only in width, depth and attention sharing; everything else
(window sizes, expansion ratio, mean shift) is fixed by the paper, so a config is small data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import reduce

from elan_deploy.errors import ElanDeployError

SUPPORTED_SCALES = (2, 3, 4)


@dataclass(frozen=True)
class ELANConfig:
    """Hyper-parameters of one ELAN network (names follow the official `args`)."""

    name: str
    scale: int
    channels: int  # c_elan
    blocks: int  # m_elan: LFE/GMSA pairs
    n_share: int  # GMSA modules that reuse the first one's attention, per ELAB
    r_expand: int = 2
    window_sizes: tuple[int, ...] = (4, 8, 16)
    rgb_range: float = 255.0
    rgb_mean: tuple[float, float, float] = (0.4488, 0.4371, 0.4040)  # DIV2K

    @property
    def window_multiple(self) -> int:
        """Input H and W must be multiples of this (the windows' least common multiple)."""
        return reduce(lambda a, b: a * b // math.gcd(a, b), self.window_sizes)

    @property
    def num_elabs(self) -> int:
        return self.blocks // (1 + self.n_share)

    @property
    def model_id(self) -> str:
        return f"{self.name}-x{self.scale}"


_BASE = {
    "elan-light": ELANConfig(name="elan-light", scale=4, channels=60, blocks=24, n_share=1),
    "elan": ELANConfig(name="elan", scale=4, channels=180, blocks=36, n_share=0),
}
MODEL_NAMES = tuple(_BASE)


def get_config(name: str, scale: int = 4) -> ELANConfig:
    """Return the named config for `scale` (2, 3 or 4)."""
    if name not in _BASE:
        raise ElanDeployError(f"unknown model '{name}'; choose one of {', '.join(MODEL_NAMES)} or pass a checkpoint path")
    if scale not in SUPPORTED_SCALES:
        raise ElanDeployError(f"unsupported scale {scale}; ELAN is defined for scales {SUPPORTED_SCALES}")
    return replace(_BASE[name], scale=scale)
