"""Which patch of which image the crops show, and how much the error maps are amplified.

The crop is the window with most HR detail, weighted toward where the engines differ most from
the reference; the engines are the reduced-precision cells a user would deploy. Pure functions
on numpy arrays and the results document, tested without drawing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from elan_deploy.bench.figures.cells import REFERENCE_CELL, cell_points, pareto_front
from elan_deploy.bench.matrix import row_label
from elan_deploy.imaging import imresize, rgb_to_y

CROP_SIZE = 96  # HR pixels; shown about 3x enlarged


@dataclass(frozen=True)
class CropBox:
    """A square window of an HR image, in pixels; the same box cuts every panel of one sample."""

    top: int
    left: int
    size: int

    def of(self, image: np.ndarray) -> np.ndarray:
        return image[self.top : self.top + self.size, self.left : self.left + self.size]


@dataclass(frozen=True)
class CropSample:
    """One dataset image with every cell's output for it (uint8 HxWx3 at HR size).

    The bicubic panel is made from `lr` (MATLAB-compatible bicubic) only for the image that is
    shown, unless a ready-made `bicubic` is given.
    """

    name: str
    hr: np.ndarray
    outputs: dict[str, np.ndarray]
    lr: np.ndarray | None = None
    bicubic: np.ndarray | None = None

    def bicubic_at(self, scale: int) -> np.ndarray | None:
        if self.bicubic is not None:
            return self.bicubic
        return imresize(self.lr, scale=scale) if self.lr is not None else None


def detail_energy(image: np.ndarray) -> np.ndarray:
    """Squared luma gradient per pixel: large on texture and edges, ~0 on smooth skin or sky."""
    y = rgb_to_y(image) if image.ndim == 3 else image.astype(np.float64)
    energy = np.zeros(y.shape, dtype=np.float64)
    energy[:, :-1] += np.diff(y, axis=1) ** 2
    energy[:-1, :] += np.diff(y, axis=0) ** 2
    return energy


def difference_map(outputs: Sequence[np.ndarray], reference: np.ndarray) -> np.ndarray:
    """Per pixel, the largest |engine − reference| over engines and channels (8-bit levels)."""
    ref = reference.astype(np.int16)
    diff = np.zeros(reference.shape[:2], dtype=np.int16)
    for out in outputs:
        np.maximum(diff, np.abs(out.astype(np.int16) - ref).max(axis=-1), out=diff)
    return diff


def window_means(values: np.ndarray, size: int) -> np.ndarray:
    """Mean of `values` over every size×size window; element [t, l] is the window at top t, left l."""
    padded = np.zeros((values.shape[0] + 1, values.shape[1] + 1), dtype=np.float64)
    padded[1:, 1:] = np.cumsum(np.cumsum(values, axis=0), axis=1)
    sums = padded[size:, size:] - padded[:-size, size:] - padded[size:, :-size] + padded[:-size, :-size]
    return sums / (size * size)


def choose_crop_among(hrs: Sequence[np.ndarray], size: int = CROP_SIZE,
                      differences: Sequence[np.ndarray | None] | None = None) -> tuple[int, CropBox]:
    """(image index, box) of the window that tells most across several images.

    Score = HR detail (mean squared luma gradient, normalised to the best window over all images)
    × (1 + the engines' difference from the reference, normalised the same way): detail decides,
    and among detailed windows the one where the engines lose most wins, up to twice the weight.
    """
    size = min([size] + [min(h.shape[:2]) for h in hrs])
    details = [window_means(detail_energy(h), size) for h in hrs]
    diffs = [window_means(d.astype(np.float64), size) if d is not None else None for d in (differences or [None] * len(hrs))]
    top_detail = max(float(d.max()) for d in details) or 1.0
    top_diff = max((float(d.max()) for d in diffs if d is not None), default=0.0) or 1.0
    best = (-1.0, 0, CropBox(0, 0, size))
    for index, (detail, diff) in enumerate(zip(details, diffs)):
        score = detail / top_detail * (1.0 + (diff / top_diff if diff is not None else 0.0))
        t, l = np.unravel_index(int(np.argmax(score)), score.shape)
        if score[t, l] > best[0]:
            best = (float(score[t, l]), index, CropBox(int(t), int(l), size))
    return best[1], best[2]


def choose_crop(hr: np.ndarray, size: int = CROP_SIZE, outputs: Sequence[np.ndarray] = (),
                reference: np.ndarray | None = None) -> CropBox:
    """The size×size box of one HR image that tells most (see `choose_crop_among`)."""
    difference = difference_map(outputs, reference) if outputs and reference is not None else None
    return choose_crop_among([hr], size, [difference])[1]


def amplification(errors: Sequence[np.ndarray]) -> int:
    """A power of two that brings the 99th percentile of the errors near full scale (1..64)."""
    values = np.concatenate([e.ravel() for e in errors]) if errors else np.zeros(1)
    p99 = max(float(np.percentile(values, 99)), 1.0)
    return int(min(64, max(1, 2 ** math.floor(math.log2(255.0 / p99)))))


def crop_engines(doc: dict[str, Any], main_shape: str, dataset: str, most: int = 3) -> list[str]:
    """The engines worth a close look: the reduced-precision cells on the Pareto front (the ones a
    user would deploy), fastest first, and the most accurate INT8 cell if none of them is INT8.
    Without a front, the most accurate cell other than the reference."""
    rated = [p for p in cell_points(doc, main_shape, dataset) if p.psnr is not None]
    precision = {p.cell: p.precision for p in rated}
    engines = [c for c in pareto_front([(p.cell, p.p50_ms, p.psnr) for p in rated]) if precision[c] != "fp32"][:most]
    quality = [r for r in doc["rows"] if r.get("kind") == "quality" and r.get("dataset") == dataset and row_label(r) != REFERENCE_CELL]
    ranked = sorted(quality, key=lambda r: -r["psnr"])
    by_psnr = [row_label(r) for r in ranked]
    int8 = [row_label(r) for r in ranked if r["precision"] == "int8"]
    if int8 and not any(precision[c] == "int8" for c in engines):
        engines = engines[: most - 1] + int8[:1]
    return engines or by_psnr[:1]

