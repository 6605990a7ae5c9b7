"""Tile geometry: tiles start on the window grid and their seams cover every pixel once."""

from __future__ import annotations

import numpy as np
import pytest

from elan_deploy.upscale import seams, tile_starts


def test_tile_geometry_covers_every_pixel_once() -> None:
    for length in (16, 100, 256, 700, 1000):
        starts = tile_starts(length, 256, 64) if length > 256 else [0]
        spans = seams(starts, min(256, length), length)
        covered = np.zeros(length, int)
        for begin, end in spans:
            covered[begin:end] += 1
        assert (covered == 1).all()
        assert all(s % 16 == 0 for s in starts[:-1])


def test_tiles_and_padding_follow_the_models_multiple() -> None:
    from elan_deploy.errors import ElanDeployError
    from elan_deploy.geometry import tile_starts
    from elan_deploy.upscale import Upscaler

    assert tile_starts(100, 48, 8, multiple=8) == [0, 40, 52]  # steps of 40: the grid of 8 allows them
    assert tile_starts(100, 48, 8) == [0, 32, 52]  # steps on ELAN's grid of 16
    Upscaler(None, 4, tile=24, multiple=8)  # a tile of 24 fits a grid of 8
    with pytest.raises(ElanDeployError, match="multiple of 16"):
        Upscaler(None, 4, tile=24)
