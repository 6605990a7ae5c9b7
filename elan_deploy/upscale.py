"""Upscaler: the one place that pads, tiles, batches and stitches, for every runtime.

Engines only see N,3,H,W float32 tensors whose H and W are multiples of 16. Images of any size
are reflect-padded to that multiple; images larger than the tile size are cut into overlapping
tiles of one fixed shape (so static engines apply), run in batches, and stitched by keeping
from each tile the part nearest its centre: each seam sits in the middle of an overlap, where
both tiles saw `overlap / 2` pixels of context.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from elan_deploy.errors import ElanDeployError
from elan_deploy.runtimes.base import Engine, ShapeRange

MULTIPLE = 16
# Peak memory of ELAN-light is ~3 KB per LR pixel (attention maps dominate), so 256x256 LR tiles
# (~200 MB) keep a 4K output (960x540 LR) well inside 1 GiB.
DEFAULT_TILE = 256
DEFAULT_OVERLAP = 64
WRAP_CONTEXT = 16  # one window-grid cell: keeps the spliced rows on the same window grid


def round_up(value: int, multiple: int = MULTIPLE) -> int:
    return -(-value // multiple) * multiple


def pad_reflect(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pad HxWx3 bottom/right to (height, width); mirror repeatedly for tiny images."""
    out = image
    while out.shape[0] < height or out.shape[1] < width:
        ph = min(height - out.shape[0], out.shape[0] - 1)
        pw = min(width - out.shape[1], out.shape[1] - 1)
        if ph <= 0 and pw <= 0:  # 1-pixel image: mirroring cannot grow it
            return np.pad(out, ((0, height - out.shape[0]), (0, width - out.shape[1]), (0, 0)), mode="edge")
        out = np.pad(out, ((0, max(ph, 0)), (0, max(pw, 0)), (0, 0)), mode="reflect")
    return out


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size `tile` covering [0, length) with at least `overlap` shared."""
    if length <= tile:
        return [0]
    step = max(MULTIPLE, (tile - overlap) // MULTIPLE * MULTIPLE)
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
    overlap of at least three contexts (`bench/tiling_seams.py`: with less, the splice's own
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


@dataclass(frozen=True)
class TilePlan:
    tile_h: int
    tile_w: int
    overlap: int
    batch: int


class Upscaler:
    """Run an engine on whole images of any size: HxWx3 float32 0..255 -> sHxsWx3 float32."""

    def __init__(
        self,
        engine: Engine,
        scale: int,
        tile: int | None = DEFAULT_TILE,
        overlap: int = DEFAULT_OVERLAP,
        batch: int = 1,
        shapes: ShapeRange | None = None,
    ) -> None:
        if tile is not None and (tile < MULTIPLE or tile % MULTIPLE):
            raise ElanDeployError(f"tile size {tile} must be a positive multiple of {MULTIPLE}")
        if tile is not None and not 0 <= overlap < tile:
            raise ElanDeployError(f"overlap {overlap} must be >= 0 and smaller than the tile ({tile})")
        self.engine = engine
        self.scale = scale
        self.tile = tile
        self.overlap = overlap
        self.batch = batch
        self.shapes = shapes

    def plan(self, height: int, width: int) -> TilePlan | None:
        """None: one run on the padded image. Otherwise the fixed tile shape to use."""
        ph, pw = round_up(height), round_up(width)
        if self.shapes is not None and self.shapes.is_static:
            n, _, th, tw = self.shapes.opt
            return TilePlan(th, tw, min(self.overlap, th // 2, tw // 2), n)
        if self.tile is None or (ph <= self.tile and pw <= self.tile):
            if self.shapes is None or self.shapes.contains((1, 3, ph, pw)):
                return None
            n, _, th, tw = self.shapes.max
            return TilePlan(th, tw, min(self.overlap, th // 2, tw // 2), 1)
        return TilePlan(min(self.tile, ph), min(self.tile, pw), self.overlap, self.batch)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if image.ndim != 3 or image.shape[2] != 3:
            raise ElanDeployError(f"expected an HxWx3 RGB image, got shape {image.shape}")
        height, width = image.shape[:2]
        image = image.astype(np.float32, copy=False)
        plan = self.plan(height, width)
        if plan is None:
            padded = pad_reflect(image, round_up(height), round_up(width))
            out = self.engine(padded.transpose(2, 0, 1)[None])[0].transpose(1, 2, 0)
        else:
            out = self._tiled(image, plan)
        return np.ascontiguousarray(out[: height * self.scale, : width * self.scale])

    def _tiled(self, image: np.ndarray, plan: TilePlan) -> np.ndarray:
        s = self.scale
        # Tile origins on multiples of 16 keep every tile's attention windows on the same grid as
        # an untiled run, so the tiles compute the same function away from their borders.
        h = round_up(max(image.shape[0], plan.tile_h))
        w = round_up(max(image.shape[1], plan.tile_w))
        padded = pad_reflect(image, h, w)
        rows, cols = tile_starts(h, plan.tile_h, plan.overlap), tile_starts(w, plan.tile_w, plan.overlap)
        row_keep, col_keep = seams(rows, plan.tile_h, h), seams(cols, plan.tile_w, w)
        out = np.empty((h * s, w * s, 3), dtype=np.float32)
        row_idx = [wrap_aware_indices(r, plan.tile_h, h, plan.overlap) for r in rows]
        col_idx = [wrap_aware_indices(c, plan.tile_w, w, plan.overlap) for c in cols]
        jobs = [(r, c) for r in range(len(rows)) for c in range(len(cols))]
        for first in range(0, len(jobs), plan.batch):
            chunk = jobs[first : first + plan.batch]
            tiles = [padded[np.ix_(row_idx[r], col_idx[c])] for r, c in chunk]
            tiles += [tiles[-1]] * (plan.batch - len(tiles))  # static engines want a full batch
            result = self.engine(np.stack(tiles).transpose(0, 3, 1, 2))
            for (r, c), sr in zip(chunk, result):
                (y0, y1), (x0, x1) = row_keep[r], col_keep[c]
                ty, tx = y0 - rows[r], x0 - cols[c]
                out[y0 * s : y1 * s, x0 * s : x1 * s] = sr[:, ty * s : (ty + y1 - y0) * s, tx * s : (tx + x1 - x0) * s].transpose(1, 2, 0)
        return out
