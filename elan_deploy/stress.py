"""The stress set: hard-edged synthetic images that photographs never show the network.

Super-resolution models are trained on photographs; what users feed them also includes rendered
text, UI screenshots, QR codes and barcodes, pixel art, line art and flat saturated colour. On
those the paper's ELAN leaves every feature range seen in training and its output explodes
(`model.range_guard`). This module draws such images deterministically in code (PIL's own fonts,
no files), in six classes, each used two ways:

- `lr`: the image as drawn, fed raw to the network (what users do);
- `hr`: the same scene drawn at `scale`x, whose MATLAB-bicubic downscale `hr_lr` is the input
  when a PSNR against `hr` is wanted (the benchmark protocol; these inputs stay in range).

`flat_share` is the robustness measure: in regions that are flat in the raw input (8x8 LR
blocks of one colour, less two LR pixels at each side), the share of output pixels within 12
levels of that colour. A network that explodes paints coloured speckles there. The margin leaves
out the sharpening overshoot next to an edge, which any good upscaler has: in development runs,
with one pixel of margin the guarded FP32 model scored 92-96 % on QR codes of 4-pixel modules whatever was
clamped, with two 96-98 %, while the unguarded model stays far below either.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from elan_deploy.imaging import imresize
from elan_deploy.metrics import psnr

STRESS_DATASET = "stress"  # its name where a dataset is named (`bench --dataset stress`, results rows)
CLASSES: tuple[str, ...] = ("text", "ui", "qr", "pixel-art", "line-art", "colour-blocks")
FLAT_BLOCK = 8  # LR pixels on a side of a flat region
FLAT_MARGIN = 2  # LR pixels at each side of a flat block left out of the measure (edge overshoot)
FLAT_LEVELS = 12  # an output pixel within this many 8-bit levels of the block's colour counts as clean

# What "holds on the stress set" means (the range guard's acceptance): raw outputs inside these
# bounds, flat regions at least this clean per class (the worst image), and fidelity to the
# guarded FP32 model at least this high (FP32 engines differ from it only by rounding order).
RAW_BOUNDS = (-64.0, 320.0)
FLAT_FLOORS = {"text": 0.99, "ui": 0.99, "qr": 0.95}
FIDELITY_FLOOR_DB = {"fp32": 45.0, "reduced": 30.0}


@dataclass(frozen=True)
class StressImage:
    name: str  # e.g. "text-1"
    kind: str  # one of CLASSES
    lr: np.ndarray  # HxWx3 uint8, drawn at the LR size: the raw input
    hr: np.ndarray  # (sH)x(sW)x3 uint8, the same scene drawn at `scale`x
    hr_lr: np.ndarray  # MATLAB-bicubic downscale of `hr`: an input with a ground truth


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _text(draw: ImageDraw.ImageDraw, u: int, variant: int) -> None:
    words = ("Invoice 2026-12", "TOTAL: $1,234.50", "elan-deploy x4", "The quick brown fox", "QR 0123456789")
    colours = ((0, 0, 0), (200, 0, 0), (0, 60, 200), (0, 120, 0))
    y = 2 * u
    for i, word in enumerate(words[variant % 2 :: 1][:4]):
        size = (8 + 3 * ((i + variant) % 3)) * u
        draw.text((3 * u, y), word, fill=colours[(i + variant) % len(colours)], font=_font(size))
        y += size + 3 * u


def _ui(draw: ImageDraw.ImageDraw, u: int, variant: int) -> None:
    w, h = draw.im.size
    accent = ((30, 110, 230), (230, 80, 40))[variant % 2]
    draw.rectangle((0, 0, w, 12 * u), fill=accent)
    draw.text((4 * u, 2 * u), "Settings", fill=(255, 255, 255), font=_font(8 * u))
    draw.rectangle((0, 12 * u, 28 * u, h), fill=(236, 238, 241))
    for i in range(4):
        draw.rectangle((3 * u, (16 + 10 * i) * u, 25 * u, (22 + 10 * i) * u), fill=(255, 255, 255) if i else accent)
    draw.line((28 * u, 12 * u, 28 * u, h), fill=(180, 180, 185), width=u)
    for i in range(3):
        top = (18 + 14 * i) * u
        draw.rectangle((34 * u, top, w - 6 * u, top + 9 * u), outline=(150, 150, 160), width=u, fill=(255, 255, 255))
        draw.text((36 * u, top + u), f"Field {i + 1}", fill=(60, 60, 70), font=_font(6 * u))
    draw.rectangle((w - 30 * u, h - 14 * u, w - 6 * u, h - 5 * u), fill=accent)


def _qr(draw: ImageDraw.ImageDraw, u: int, variant: int) -> None:
    w, h = draw.im.size
    module = 4 * u
    rng = np.random.default_rng(17 + variant)
    cols, rows = (w // u - 8) * u // module, (h // u - 8) * u // module
    bits = rng.random((rows, cols)) < 0.5
    for finder in ((0, 0), (0, cols - 7), (rows - 7, 0)):
        fy, fx = finder
        bits[fy : fy + 7, fx : fx + 7] = False
        bits[fy : fy + 7, fx] = bits[fy : fy + 7, fx + 6] = True
        bits[fy, fx : fx + 7] = bits[fy + 6, fx : fx + 7] = True
        bits[fy + 2 : fy + 5, fx + 2 : fx + 5] = True
    for r in range(rows):
        for c in range(cols):
            if bits[r, c]:
                x0, y0 = 4 * u + c * module, 4 * u + r * module
                draw.rectangle((x0, y0, x0 + module - 1, y0 + module - 1), fill=(0, 0, 0))
    if variant % 2:  # a barcode strip under the code
        bars = rng.integers(1, 4, size=40)
        x = 4 * u
        for i, width in enumerate(bars):
            if i % 2 == 0 and x + width * u < w - 4 * u:
                draw.rectangle((x, h - 3 * u, x + width * u - 1, h - u), fill=(0, 0, 0))
            x += width * u


def _pixel_art(draw: ImageDraw.ImageDraw, u: int, variant: int) -> None:
    w, h = draw.im.size
    palette = ((34, 32, 52), (69, 40, 60), (223, 113, 38), (251, 242, 54), (106, 190, 48), (91, 110, 225), (255, 255, 255))
    rng = np.random.default_rng(5 + variant)
    cell = 2 * u
    sprite = rng.integers(0, len(palette), size=(8, 8))
    sprite = np.concatenate([sprite, sprite[:, ::-1]], axis=1)  # symmetric, like most sprites
    for r in range(h // cell):
        for c in range(w // cell):
            colour = palette[sprite[r % 16 // 2, c % 16]] if (r // 8 + c // 16 + variant) % 3 == 0 else palette[(r // 8 + c // 16) % 2 * 5]
            draw.rectangle((c * cell, r * cell, (c + 1) * cell - 1, (r + 1) * cell - 1), fill=colour)


def _line_art(draw: ImageDraw.ImageDraw, u: int, variant: int) -> None:
    w, h = draw.im.size
    ink = ((0, 0, 0), (20, 20, 120))[variant % 2]
    for i in range(6):
        draw.line((2 * u, (4 + 9 * i) * u, w - 2 * u, (8 + 7 * i + 5 * variant) * u), fill=ink, width=u)
    draw.ellipse((w // 2 - 18 * u, h // 2 - 18 * u, w // 2 + 18 * u, h // 2 + 18 * u), outline=ink, width=u)
    draw.rectangle((6 * u, 6 * u, 30 * u, 26 * u), outline=ink, width=u)


def _colour_blocks(draw: ImageDraw.ImageDraw, u: int, variant: int) -> None:
    w, h = draw.im.size
    colours = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255), (0, 0, 0), (255, 255, 255))
    side = (16, 12)[variant % 2] * u
    for r in range(0, h, side):
        for c in range(0, w, side):
            draw.rectangle((c, r, c + side - 1, r + side - 1), fill=colours[(r // side * 3 + c // side + variant) % len(colours)])


_DRAW: dict[str, Callable[[ImageDraw.ImageDraw, int, int], None]] = {
    "text": _text, "ui": _ui, "qr": _qr, "pixel-art": _pixel_art, "line-art": _line_art, "colour-blocks": _colour_blocks,
}
_BACKGROUND: dict[str, tuple[int, int, int]] = {
    "text": (255, 255, 255), "ui": (250, 250, 252), "qr": (255, 255, 255), "pixel-art": (0, 0, 0),
    "line-art": (255, 255, 255), "colour-blocks": (0, 0, 0),
}


def render(kind: str, variant: int, size: tuple[int, int] = (120, 80), unit: int = 1) -> np.ndarray:
    """One image of class `kind` (HxWx3 uint8, `size` = (W, H) times `unit`), the same for a variant every time."""
    if kind not in _DRAW:
        raise ValueError(f"unknown stress class '{kind}'; one of {', '.join(CLASSES)}")
    width, height = size
    image = Image.new("RGB", (width * unit, height * unit), _BACKGROUND[kind])
    _DRAW[kind](ImageDraw.Draw(image), unit, variant)
    return np.asarray(image, dtype=np.uint8).copy()


def stress_set(scale: int = 4, per_class: int = 2, size: tuple[int, int] = (120, 80)) -> list[StressImage]:
    """`per_class` images of every class, raw and with an HR ground truth at `scale`x."""
    images = []
    for kind in CLASSES:
        for variant in range(per_class):
            hr = render(kind, variant, size, unit=scale)
            images.append(StressImage(f"{kind}-{variant + 1}", kind, render(kind, variant, size), hr, imresize(hr, scale=1 / scale)))
    return images


def flat_share(lr: np.ndarray, sr: np.ndarray, scale: int) -> float | None:
    """Share of output pixels within FLAT_LEVELS of their block's colour, over the flat blocks of `lr`.

    `lr` HxWx3 uint8 (the raw input), `sr` its (sH)x(sW)x3 output (uint8, or float clipped
    here). None when the input has no flat block.
    """
    out = np.clip(np.asarray(sr, dtype=np.float32), 0, 255)
    inner = (FLAT_BLOCK - 2 * FLAT_MARGIN) * scale
    clean = total = 0
    for y in range(0, lr.shape[0] - FLAT_BLOCK + 1, FLAT_BLOCK):
        for x in range(0, lr.shape[1] - FLAT_BLOCK + 1, FLAT_BLOCK):
            block = lr[y : y + FLAT_BLOCK, x : x + FLAT_BLOCK].reshape(-1, 3)
            if not (block == block[0]).all():
                continue
            oy, ox = (y + FLAT_MARGIN) * scale, (x + FLAT_MARGIN) * scale
            region = out[oy : oy + inner, ox : ox + inner]
            distance = np.abs(region - block[0].astype(np.float32)).max(axis=-1)
            clean += int((distance <= FLAT_LEVELS).sum())
            total += distance.size
    return clean / total if total else None


@dataclass(frozen=True)
class StressScores:
    """How one engine behaves on the stress set's raw inputs."""

    raw_min: float  # lowest raw output value over all images (NaN when any output is not finite)
    raw_max: float
    flat_share: dict[str, float]  # class -> the worst image's flat share (classes with flat blocks only)
    worst_fidelity_db: float | None  # lowest PSNR against the guarded FP32 outputs; None without them

    def failures(self, precision: str) -> list[str]:
        """Why the engine does not hold on the stress set (empty when it does); `precision` picks the fidelity floor."""
        found = []
        low, high = RAW_BOUNDS
        if not (math.isfinite(self.raw_min) and math.isfinite(self.raw_max)):
            found.append("non-finite output")
        elif self.raw_min < low or self.raw_max > high:
            found.append(f"raw output {self.raw_min:.0f}..{self.raw_max:.0f} outside {low:.0f}..{high:.0f}")
        for kind, floor in FLAT_FLOORS.items():
            if kind in self.flat_share and self.flat_share[kind] < floor:
                found.append(f"{kind} {self.flat_share[kind] * 100:.1f} % clean < {floor * 100:.0f} %")
        floor_db = FIDELITY_FLOOR_DB["fp32" if precision == "fp32" else "reduced"]
        if self.worst_fidelity_db is not None and self.worst_fidelity_db < floor_db:
            found.append(f"{self.worst_fidelity_db:.1f} dB from guarded fp32 < {floor_db:.0f}")
        return found


def score_raw_outputs(
    images: Sequence[StressImage], raw: Sequence[np.ndarray], scale: int, reference: Sequence[np.ndarray] | None = None
) -> StressScores:
    """Scores of float outputs `raw` (HxWx3, unclipped) on the raw inputs; `reference`: the guarded FP32 outputs."""
    finite = all(np.isfinite(out).all() for out in raw)
    shares: dict[str, float] = {}
    for image, out in zip(images, raw):
        share = flat_share(image.lr, out, scale) if finite else None
        if share is not None:
            shares[image.kind] = min(shares.get(image.kind, 1.0), share)
    fidelity = None
    if reference is not None:
        fidelity = min(psnr(np.clip(o, 0, 255), np.clip(r, 0, 255)) for o, r in zip(raw, reference)) if finite else 0.0
    return StressScores(
        raw_min=float(min(o.min() for o in raw)) if finite else math.nan,
        raw_max=float(max(o.max() for o in raw)) if finite else math.nan,
        flat_share={k: round(v, 4) for k, v in shares.items()},
        worst_fidelity_db=None if fidelity is None else round(float(fidelity), 2),
    )
