"""Upscaler: the one place that pads, tiles, batches and stitches, for every runtime.

Engines only see N,3,H,W float32 tensors whose H and W are multiples of 16. Images of any size
are reflect-padded to that multiple; images larger than the tile size are cut into overlapping
tiles of one fixed shape (so static engines apply), run in batches, and stitched by keeping
from each tile the part nearest its centre: each seam sits in the middle of an overlap, where
both tiles saw `overlap / 2` pixels of context.

Memory is bounded by the tile, not the image. Each tile's kept part goes straight into the
output as soon as the engine returns it, and `upscale_uint8` (the path of `upscale`, `serve`,
the Ray actors and video) stitches into a uint8 output, so besides the engine's working set for
one batch of tiles the only image-sized buffer is the output itself (144 MB for 8000x6000):
a float32 output of that size would be 576 MB, plus the same again for each `round`/`clip`
temporary. Before any tile runs, the whole job's memory is estimated and a tile (or a
whole-image run, `tile=None`) that cannot fit is refused with a tile size that does.

Every engine output is checked for NaN/Inf (`NonFiniteOutput`): a non-finite value never
becomes a pixel.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from elan_deploy.errors import ElanDeployError
from elan_deploy.geometry import (
    DEFAULT_TILE,
    MULTIPLE,
    TilePlan,
    default_overlap,
    pad_reflect,
    round_up,
    seams,
    tile_starts,
    wrap_aware_indices,
)
from elan_deploy.runtimes.base import Engine, ShapeRange
from elan_deploy.stress import RAW_BOUNDS
from elan_deploy.upscale.memory import BYTES_PER_LR_PIXEL, MAX_MEMORY_ENV, MemoryEstimate, available_memory, gib

# Pillow's ITU-R 601-2 luma (Image.convert("L")): grayscale outputs match what Pillow would make.
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class Upscaler:
    """Run an engine on whole images of any size.

    `__call__`: HxWx3 (or HxW grayscale) float/uint8 0..255 -> sHxsWx3 (sHxsW) float32, for
    evaluation. `upscale_uint8`: the same pixels rounded, built tile by tile into a uint8 output
    in bounded memory, for everything that writes or serves images.

    A HxW (or HxWx1) input is grayscale: the network runs on the replicated channels and the
    output is its luminance, so grayscale stays grayscale without a tint.
    """

    def __init__(
        self,
        engine: Engine,
        scale: int,
        tile: int | None = DEFAULT_TILE,
        overlap: int | None = None,
        batch: int = 1,
        shapes: ShapeRange | None = None,
        memory_limit: int | None = None,
        multiple: int = MULTIPLE,
    ) -> None:
        if tile is not None and (tile < multiple or tile % multiple):
            raise ElanDeployError(
                f"tile size {tile} must be a positive multiple of {multiple} (e.g. {DEFAULT_TILE}); "
                "0 on the command line runs whole images"
            )
        if overlap is not None and overlap < 0:
            raise ElanDeployError(f"overlap {overlap} must be 0 or more; leave it out for the default")
        if overlap is not None and tile is not None and overlap >= tile:
            raise ElanDeployError(
                f"overlap {overlap} must be smaller than the tile ({tile}); "
                f"pass --overlap {default_overlap(tile)} or leave it out"
            )
        if batch < 1:
            raise ElanDeployError(f"batch {batch} must be 1 or more")
        self.engine = engine
        self.scale = scale
        self.tile = tile
        self.overlap = default_overlap(tile) if overlap is None else overlap
        self.batch = batch
        self.shapes = shapes
        self.memory_limit = memory_limit
        self.multiple = multiple  # the model's size rule (`ELANConfig.size_rules`): H and W are padded to it

    # --- planning -------------------------------------------------------------------------

    def plan(self, height: int, width: int) -> TilePlan | None:
        """None: one run on the padded image. Otherwise the fixed tile shape to use."""
        ph, pw = round_up(height, self.multiple), round_up(width, self.multiple)
        if self.shapes is not None and self.shapes.is_static:
            n, _, th, tw = self.shapes.opt
            return TilePlan(th, tw, min(self.overlap, th // 2, tw // 2), n)
        if self.tile is None or (ph <= self.tile and pw <= self.tile):
            if self.shapes is None or self.shapes.contains((1, 3, ph, pw)):
                return None
            n, _, th, tw = self.shapes.max
            return TilePlan(th, tw, min(self.overlap, th // 2, tw // 2), 1)
        return TilePlan(min(self.tile, ph), min(self.tile, pw), self.overlap, self.batch)

    def estimate(self, height: int, width: int, channels: int = 3, itemsize: int = 1) -> MemoryEstimate:
        """Memory one HxW image takes, for an output of `itemsize` bytes per value."""
        plan = self.plan(height, width)
        ph, pw = round_up(height, self.multiple), round_up(width, self.multiple)
        pixels = ph * pw if plan is None else plan.batch * plan.tile_h * plan.tile_w
        out_values = height * width * self.scale**2 * channels
        # uint8 outputs are encoded next: Pillow holds RGB at 4 bytes per pixel while it writes.
        encoder = out_values // channels * 4 if itemsize == 1 else 0
        tile_floats = pixels * self.scale**2 * 3 * 4 * 3  # engine output + round/clip temporaries
        return MemoryEstimate(pixels * BYTES_PER_LR_PIXEL, out_values * itemsize + encoder, ph * pw * 3 * 4 + tile_floats)

    def check_fits(self, height: int, width: int, channels: int = 3, itemsize: int = 1) -> None:
        """Refuse, before any compute, an image whose tiles or output cannot fit in memory.

        The limit is `memory_limit` (bytes for this image's work) if given, else
        `available_memory()`. The message suggests the largest tile that fits.
        """
        need = self.estimate(height, width, channels, itemsize)
        limit = self.memory_limit if self.memory_limit is not None else available_memory()
        if need.total <= limit:
            return
        size = f"{width}x{height}"
        suggested = self.suggest_tile(height, width, limit, channels, itemsize)
        if suggested is None:
            raise ElanDeployError(
                f"the x{self.scale} output of a {size} image needs {gib(need.output)} and {gib(max(limit, 0))} "
                f"is available; upscale a smaller image or crop it (or raise {MAX_MEMORY_ENV})"
            )
        plan = self.plan(height, width)
        what = "a whole-image run" if plan is None else f"tile {plan.tile_w}x{plan.tile_h}"
        what += f" x batch {plan.batch}" if plan is not None and plan.batch > 1 else ""
        fix = (
            f"build the engine for a smaller tile (--shapes 1x3x{suggested}x{suggested})"
            if self.shapes is not None and self.shapes.is_static
            else f"pass --tile {suggested} (or less)"
        )
        raise ElanDeployError(
            f"{what} on a {size} image needs ~{gib(need.total)} and {gib(max(limit, 0))} is available; {fix}"
        )

    def suggest_tile(self, height: int, width: int, limit: int, channels: int = 3, itemsize: int = 1) -> int | None:
        """The largest tile (a multiple of the model's, at most 1024) whose job fits in `limit` bytes, or
        None when not even the smallest does (the output alone is too large)."""
        best = None
        for tile in range(self.multiple, 1024 + 1, self.multiple):
            probe = Upscaler(self.engine, self.scale, tile=tile, batch=1 if self.shapes else self.batch, multiple=self.multiple)
            if probe.estimate(height, width, channels, itemsize).total <= limit:
                best = tile
        return best

    # --- running --------------------------------------------------------------------------

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """HxWx3 (or HxW) 0..255 -> sHxsWx3 (or sHxsW) float32; NaN/Inf raises NonFiniteOutput."""
        rgb, gray = _as_rgb(image)
        height, width = rgb.shape[:2]
        self.check_fits(height, width, 1 if gray else 3, itemsize=4)
        shape = (height * self.scale, width * self.scale) + (() if gray else (3,))
        out = np.empty(shape, dtype=np.float32)
        for (y0, y1, x0, x1), block in self._pieces(rgb):
            out[y0:y1, x0:x1] = _luminance(block) if gray else block
        return out

    def upscale_uint8(self, image: np.ndarray, observed: OutputRange | None = None) -> np.ndarray:
        """HxWx3 (or HxW grayscale) uint8/float 0..255 -> sHxsWx3 (or sHxsW) uint8.

        Equal to rounding `__call__`'s output, in memory bounded by the tile: each tile is
        rounded into the uint8 output as it arrives. NaN/Inf raises NonFiniteOutput.
        `observed`, when given, collects the raw output's range before it is clipped to 0..255.
        """
        rgb, gray = _as_rgb(image)
        height, width = rgb.shape[:2]
        self.check_fits(height, width, 1 if gray else 3, itemsize=1)
        shape = (height * self.scale, width * self.scale) + (() if gray else (3,))
        out = np.empty(shape, dtype=np.uint8)
        for (y0, y1, x0, x1), block in self._pieces(rgb):
            # imaging.to_uint8's round and clip, with one tile-sized temporary instead of three
            if observed is not None:
                observed.add(block)
            values = np.round(_luminance(block) if gray else block)
            np.clip(values, 0, 255, out=values)
            out[y0:y1, x0:x1] = values
        return out

    def _run_engine(self, batch: np.ndarray) -> np.ndarray:
        """One engine call on N,H,W,3 input; its N,3,sH,sW output is checked for NaN/Inf."""
        from elan_deploy.imaging import check_finite

        result = self.engine(np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32))
        check_finite(result, engine_label(self.engine), engine_hint(self.engine))
        return result

    def _pieces(self, image: np.ndarray) -> Iterator[tuple[tuple[int, int, int, int], np.ndarray]]:
        """(y0, y1, x0, x1) output box and the float32 HR block for it, tile by tile.

        Boxes tile the output exactly once; pixels of the padding are never yielded.
        """
        height, width = image.shape[:2]
        s = self.scale
        plan = self.plan(height, width)
        if plan is None:
            padded = pad_reflect(image, round_up(height, self.multiple), round_up(width, self.multiple))
            out = self._run_engine(padded[None])[0].transpose(1, 2, 0)
            yield (0, height * s, 0, width * s), out[: height * s, : width * s]
            return
        # Tile origins on multiples of 16 keep every tile's attention windows on the same grid as
        # an untiled run, so the tiles compute the same function away from their borders.
        h = round_up(max(height, plan.tile_h), self.multiple)
        w = round_up(max(width, plan.tile_w), self.multiple)
        padded = pad_reflect(image, h, w)  # in the input's dtype: uint8 stays 1 byte per value
        rows, cols = tile_starts(h, plan.tile_h, plan.overlap, self.multiple), tile_starts(w, plan.tile_w, plan.overlap, self.multiple)
        row_keep = [(b, min(e, height)) for b, e in seams(rows, plan.tile_h, h)]
        col_keep = [(b, min(e, width)) for b, e in seams(cols, plan.tile_w, w)]
        row_idx = [wrap_aware_indices(r, plan.tile_h, h, plan.overlap) for r in rows]
        col_idx = [wrap_aware_indices(c, plan.tile_w, w, plan.overlap) for c in cols]
        kept = lambda keep: keep[0] < keep[1]  # noqa: E731 - a tile may lie wholly in the padding
        jobs = [(r, c) for r in range(len(rows)) for c in range(len(cols)) if kept(row_keep[r]) and kept(col_keep[c])]
        for first in range(0, len(jobs), plan.batch):
            chunk = jobs[first : first + plan.batch]
            tiles = [padded[np.ix_(row_idx[r], col_idx[c])] for r, c in chunk]
            tiles += [tiles[-1]] * (plan.batch - len(tiles))  # static engines want a full batch
            result = self._run_engine(np.stack(tiles))
            for (r, c), sr in zip(chunk, result):
                (y0, y1), (x0, x1) = row_keep[r], col_keep[c]
                ty, tx = y0 - rows[r], x0 - cols[c]
                block = sr[:, ty * s : (ty + y1 - y0) * s, tx * s : (tx + x1 - x0) * s].transpose(1, 2, 0)
                yield (y0 * s, y1 * s, x0 * s, x1 * s), block


@dataclass
class OutputRange:
    """The lowest and highest raw output value of one image, before rounding and clipping.

    A network on its training domain overshoots 0..255 a little at sharp edges (the range-guarded
    model stays within −45..315 on the stress set's rendered text and QR codes). Far beyond
    `RAW_BOUNDS` the features have left every range seen in training and the picture shows
    speckles and torn edges however it is clipped: `off_domain_note` says so, for the file.
    """

    low: float = float("inf")
    high: float = float("-inf")

    def add(self, block: np.ndarray) -> None:
        self.low, self.high = min(self.low, float(block.min())), max(self.high, float(block.max()))

    def off_domain_note(self, name: str) -> str | None:
        low, high = RAW_BOUNDS
        if self.low >= low and self.high <= high:
            return None
        return (f"{name}: the model's raw output reached {self.low:.0f}..{self.high:.0f}, far outside 0..255: the image is "
                "off its training domain (text, QR codes, UI, flat colour?) and may show artifacts; the range guard "
                "(on unless --no-guard) keeps such outputs bounded")


def engine_label(engine: object) -> str:
    """'the output of the onnxruntime fp16 engine (precision used: fp16)', from its EngineInfo."""
    info = getattr(engine, "info", None)
    if info is None:
        return "the engine's output"
    precision = getattr(info.precision, "value", info.precision)
    return f"the output of the {info.runtime} {precision} engine (precision used: {info.precision_used})"


def engine_hint(engine: object) -> str:
    """What to try when an engine's output is not finite: fp32/bf16, unless it already ran fp32."""
    info = getattr(engine, "info", None)
    if info is not None and str(info.precision_used).split("+")[0] == "fp32":
        return "fp32 itself overflowed: check the checkpoint (--model) and the input, or try another --runtime"
    return "run it in fp32 or bf16 (--precision fp32), which keep the range fp16 and int8 lack"


def _as_rgb(image: np.ndarray) -> tuple[np.ndarray, bool]:
    """(HxWx3 array, was it grayscale): HxW and HxWx1 are replicated to three channels."""
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
        gray = True
    elif array.ndim == 3 and array.shape[2] == 3:
        gray = False
    else:
        raise ElanDeployError(f"expected an HxWx3 RGB or HxW grayscale image, got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ElanDeployError(f"expected a non-empty image, got shape {array.shape}")
    if array.dtype != np.uint8:
        array = array.astype(np.float32, copy=False)
    return array, gray


def _luminance(block: np.ndarray) -> np.ndarray:
    """HxWx3 float -> HxW float luma with Pillow's weights (what convert('L') computes)."""
    return block @ LUMA_WEIGHTS
