"""Padding and tile geometry in plain NumPy: where tiles start, where seams fall, how images are padded.

The Upscaler (`elan_deploy.upscale`) and the Triton pre-processing (`serve/prepost.py`) pad the
same way from this one module. It imports nothing but NumPy because `triton-repo` and `serve`
ship it beside `prepost.py` into Triton's Python backend, which has NumPy but not elan-deploy.

`MULTIPLE` is the default window grid of ELAN (its windows of 4, 8 and 16 pixels tile a grid of
16); a model whose config says otherwise (`ELANConfig.window_multiple`) passes its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MULTIPLE = 16  # the network's window grid: H and W of the float tensor are multiples of it
DEFAULT_TILE = 256
DEFAULT_OVERLAP = 64
WRAP_CONTEXT = 16  # one window-grid cell: keeps the spliced rows on the same window grid


@dataclass(frozen=True)
class SizeRules:
    """What a caller must know to feed a network: its upscaling factor, and the multiple that input
    H and W are padded to. `ModelSource.size_rules` gives the model's (from its config); padding,
    tiling and engine shapes follow it."""

    scale: int
    multiple: int = MULTIPLE


def round_up(value: int, multiple: int = MULTIPLE) -> int:
    return -(-value // multiple) * multiple


def pad_reflect(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pad HxWxC bottom/right to (height, width) by mirroring, repeatedly for tiny images."""
    out = image
    while out.shape[0] < height or out.shape[1] < width:
        ph = min(height - out.shape[0], out.shape[0] - 1)
        pw = min(width - out.shape[1], out.shape[1] - 1)
        if ph <= 0 and pw <= 0:  # 1-pixel image: mirroring cannot grow it
            return np.pad(out, ((0, height - out.shape[0]), (0, width - out.shape[1]), (0, 0)), mode="edge")
        out = np.pad(out, ((0, max(ph, 0)), (0, max(pw, 0)), (0, 0)), mode="reflect")
    return out


def tile_starts(length: int, tile: int, overlap: int, multiple: int = MULTIPLE) -> list[int]:
    """Start offsets of tiles of size `tile` covering [0, length) with at least `overlap` shared;
    on multiples of `multiple`, so every tile's windows lie on the whole image's window grid."""
    if length <= tile:
        return [0]
    step = max(multiple, (tile - overlap) // multiple * multiple)
    starts = list(range(0, length - tile, step)) + [length - tile]
    return sorted(set(starts))


def seams(starts: list[int], tile: int, length: int) -> list[tuple[int, int]]:
    """For each tile, the [begin, end) it contributes: cut midway through every overlap."""
    cuts = [0] + [(nxt + cur + tile) // 2 for cur, nxt in zip(starts, starts[1:])] + [length]
    return list(zip(cuts[:-1], cuts[1:]))


def wrap_aware_indices(start: int, tile: int, length: int, overlap: int) -> np.ndarray:
    """Source rows (or columns) of one tile, with the far image edge spliced in at border tiles.

    ELAN's cyclically shifted windows wrap around the whole image: in an untiled run the first
    rows attend to the last ones. A tile that touches only one image edge would wrap onto its own
    opposite side instead, so its last (first) WRAP_CONTEXT rows are replaced by the image's last
    (first) rows. The splice lies inside the overlap that stitching discards, which needs an
    overlap of at least three contexts (`experiments/tiling_seams.py`: with less, the splice's own
    discontinuity reaches the kept pixels and does more harm than the wrap it repairs).
    """
    index = np.arange(start, start + tile)
    if tile >= length or tile < 2 * WRAP_CONTEXT or overlap < 3 * WRAP_CONTEXT:
        return index
    if start == 0:
        index[-WRAP_CONTEXT:] = np.arange(length - WRAP_CONTEXT, length)
    elif start + tile == length:
        index[:WRAP_CONTEXT] = np.arange(WRAP_CONTEXT)
    return index


def default_overlap(tile: int | None) -> int:
    """The overlap used when none is given: DEFAULT_OVERLAP, at most half the tile."""
    return DEFAULT_OVERLAP if tile is None else min(DEFAULT_OVERLAP, tile // 2)


@dataclass(frozen=True)
class TilePlan:
    tile_h: int
    tile_w: int
    overlap: int
    batch: int
