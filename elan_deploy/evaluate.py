"""Quality evaluation: run an SR function over a dataset and score it as the paper does."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from elan_deploy.datasets import SRDataset
from elan_deploy.imaging import to_uint8
from elan_deploy.metrics import psnr_y, ssim_y

# HxWx3 float32 0..255 -> sHxsWx3 float32 0..255
SRFunction = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ImageScore:
    name: str
    psnr: float
    ssim: float


@dataclass(frozen=True)
class DatasetScore:
    dataset: str
    images: list[ImageScore]

    @property
    def psnr(self) -> float:
        return float(np.mean([s.psnr for s in self.images]))

    @property
    def ssim(self) -> float:
        return float(np.mean([s.ssim for s in self.images]))


def evaluate(
    sr_function: SRFunction,
    dataset: SRDataset,
    on_image: Callable[[ImageScore], None] | None = None,
) -> DatasetScore:
    """Mean Y-PSNR / SSIM with `scale` pixels cropped from each border, outputs rounded to uint8."""
    scores: list[ImageScore] = []
    for sample in dataset:
        sr = to_uint8(sr_function(sample.lr.astype(np.float32)))
        if sr.shape != sample.hr.shape:
            raise ValueError(f"{sample.name}: SR output {sr.shape} does not match HR {sample.hr.shape}")
        score = ImageScore(
            sample.name,
            psnr_y(sr, sample.hr, crop_border=dataset.scale),
            ssim_y(sr, sample.hr, crop_border=dataset.scale),
        )
        scores.append(score)
        if on_image:
            on_image(score)
    return DatasetScore(dataset.name, scores)
