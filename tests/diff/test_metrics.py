"""Image PSNR for Polygraphy's comparator: peak 255, pooled over batches."""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import pytest


def test_image_psnr_uses_peak_255_and_pools_batches():
    from polygraphy.comparator import IterationResult

    from elan_deploy.diff.metrics import ImagePsnrCompareFunc, pooled_psnr

    ref = np.full((1, 3, 16, 16), 100.0, np.float32)  # max 100: Polygraphy's own peak would be 100
    cand = ref + 2.0  # MSE 4
    func = ImagePsnrCompareFunc(psnr_threshold=40.0)
    result = func(IterationResult(OrderedDict(sr=cand), runner_name="c"), IterationResult(OrderedDict(sr=ref), runner_name="r"))["sr"]
    expected = 10 * math.log10(255.0**2 / 4.0)
    assert result.psnr == pytest.approx(expected, rel=1e-9) and bool(result)
    assert pooled_psnr([expected, math.inf]) == pytest.approx(10 * math.log10(255.0**2 / 2.0), rel=1e-9)
