"""ELAN configs: the paper's sizes, and an unknown model name."""

from __future__ import annotations

import pytest

from elan_deploy.errors import ElanDeployError
from elan_deploy.model import ELAN, get_config


def test_configs_match_the_paper() -> None:
    light, full = get_config("elan-light", 4), get_config("elan", 2)
    assert (light.channels, light.blocks, light.n_share, light.num_elabs) == (60, 24, 1, 12)
    assert (full.channels, full.blocks, full.n_share, full.num_elabs, full.scale) == (180, 36, 0, 36, 2)
    assert light.window_multiple == 16
    # ELAN-light has 640K learnable parameters (paper: 640K; the fixed shift taps are excluded).
    model = ELAN(light)
    learned = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad)
    assert 600_000 < learned < 650_000


def test_unknown_model_name() -> None:
    with pytest.raises(ElanDeployError, match="unknown model"):
        get_config("swinir")

