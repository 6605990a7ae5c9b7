"""Polygraphy compare functions with the peaks this toolkit needs, and PSNR pooling.

Polygraphy's `PsnrCompareFunc` takes the peak from the first output's maximum. For images
the peak is the pixel range, 255 (the paper's rgb_range), whatever the picture holds; for an
intermediate tensor it is the reference tensor's largest magnitude, so the PSNR of every layer
is on its own scale and layers can be compared along the depth of the network.

Both functions are called with (candidate, reference), the order in which Polygraphy's
`SimpleCompareFunc` makes relative errors relative to the reference.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from polygraphy.comparator import PsnrCompareFunc

from elan_deploy.metrics import psnr_from_mse

IMAGE_PEAK = 255.0


def mse_from_psnr(psnr: float, peak: float) -> float:
    if math.isnan(psnr):
        return math.nan
    if math.isinf(psnr):
        return 0.0
    return peak * peak / 10.0 ** (psnr / 10.0)


def pooled_psnr(values: Iterable[float], peak: float = IMAGE_PEAK) -> float:
    """PSNR over all iterations together (mean of their MSEs), from per-iteration PSNRs of equal size."""
    mses = [mse_from_psnr(v, peak) for v in values]
    return psnr_from_mse(float(np.mean(mses)), peak) if mses else math.nan


def _as_float(array) -> np.ndarray:
    array = np.asarray(array)
    return array if array.dtype in (np.float32, np.float64) else array.astype(np.float32)


def _mse(candidate: np.ndarray, reference: np.ndarray) -> float:
    diff = _as_float(candidate) - _as_float(reference)
    return float(np.mean(np.square(diff, dtype=np.float64)))


class ImagePsnrCompareFunc(PsnrCompareFunc):
    """Polygraphy's PSNR compare function with the peak fixed at 255 (image outputs)."""

    def __init__(self, psnr_threshold: float = 40.0, peak: float = IMAGE_PEAK, **kwargs) -> None:
        super().__init__(psnr_threshold=psnr_threshold, **kwargs)
        self.peak = peak

    def _compute_metric(self, out0, out1) -> float:
        return psnr_from_mse(_mse(out0, out1), self.peak)


class TensorPsnrCompareFunc(PsnrCompareFunc):
    """PSNR of an intermediate tensor with the reference's largest magnitude as peak, plus its max abs error.

    The result is Polygraphy's `PsnrResult`; `max_absdiff` and `peak` are added to it so one pass
    over the data gives every number of the per-layer table.
    """

    def _compute_metric(self, out0, out1) -> float:
        candidate, reference = _as_float(out0), _as_float(out1)
        peak = float(np.max(np.abs(reference))) if reference.size else 0.0
        if not math.isfinite(peak) or peak == 0.0:
            peak = float(np.max(np.abs(candidate))) if candidate.size and np.isfinite(candidate).all() else 0.0
        self._last = {"peak": peak or 1.0}
        diff = np.abs(candidate - reference)
        self._last["max_absdiff"] = float(np.max(diff)) if diff.size else 0.0
        if not np.isfinite(candidate).all():
            return math.nan
        return psnr_from_mse(float(np.mean(np.square(diff, dtype=np.float64))), peak or 1.0)

    def _check_outputs_match(self, out0, out1, threshold):
        result = super()._check_outputs_match(out0, out1, threshold)
        result.max_absdiff = self._last["max_absdiff"]
        result.peak = self._last["peak"]
        return result
