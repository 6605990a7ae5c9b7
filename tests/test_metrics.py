"""Tests for elan_deploy.metrics: Y-channel PSNR/SSIM as the SR literature computes them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from elan_deploy.imaging import imresize, modcrop, read_image
from elan_deploy.metrics import psnr, psnr_y, ssim_y
from tests.helpers import SET5, SET5_NAMES, needs_set5


def _natural(name: str = "butterfly") -> np.ndarray:
    """A natural Set5 HR image as uint8 RGB."""
    path = SET5 / "HR" / f"{name}.png"
    if not path.is_file():
        pytest.skip(f"natural test image missing: {path}")
    return read_image(path)


def _degraded(hr: np.ndarray) -> np.ndarray:
    """A realistic SR-like estimate: bicubic down x2 then up x2."""
    return imresize(imresize(hr, 1 / 2), 2)


# ------------------------------------------------------------------------------ PSNR


def test_psnr_y_identical_is_inf() -> None:
    """Identical images have infinite PSNR rather than a division error."""
    hr = _natural()
    assert psnr_y(hr, hr.copy(), 4) == math.inf


def test_psnr_y_known_offset() -> None:
    """A constant +5 on all RGB channels shifts Y by 5*219/255 everywhere."""
    hr = np.clip(_natural(), 0, 250).astype(np.uint8)
    sr = (hr.astype(np.int16) + 5).astype(np.uint8)
    delta = 5.0 * (65.481 + 128.553 + 24.966) / 255.0
    expected = 10.0 * math.log10(255.0**2 / delta**2)
    assert psnr_y(sr, hr, 2) == pytest.approx(expected, abs=1e-9)


def test_psnr_y_rounds_float_input_first() -> None:
    """Float SR output is rounded to uint8 first, like evaluating a saved PNG."""
    hr = _natural()
    assert psnr_y(hr.astype(np.float32) + 0.4, hr, 0) == math.inf
    assert psnr_y(hr.astype(np.float32) - 0.4, hr, 0) == math.inf


def test_psnr_plain_known_value() -> None:
    """Plain PSNR: a uniform error of 1 gives 20*log10(255); no rounding is applied."""
    a = _natural().astype(np.float64)
    assert psnr(a + 1.0, a) == pytest.approx(20.0 * math.log10(255.0), abs=1e-12)
    assert psnr(a + 0.25, a, peak=1.0) == pytest.approx(20.0 * math.log10(4.0), abs=1e-12)
    assert psnr(a, a) == math.inf


def test_shape_mismatch_is_value_error() -> None:
    """Comparing images of different sizes is a clear ValueError."""
    hr = _natural()
    with pytest.raises(ValueError, match="shape"):
        psnr_y(hr[:-1], hr, 2)
    with pytest.raises(ValueError, match="shape"):
        ssim_y(hr[:, :-1], hr, 2)
    with pytest.raises(ValueError, match="shape"):
        psnr(hr[:-1].astype(float), hr.astype(float))


# ------------------------------------------------------------------------------ SSIM


def _reference_ssim_y(sr: np.ndarray, hr: np.ndarray) -> float:
    """Slow textbook SSIM: direct 11x11 'valid' correlation by explicit loops."""
    weights = np.array([65.481, 128.553, 24.966])

    def to_y(image: np.ndarray) -> np.ndarray:
        rgb = np.clip(np.round(image.astype(np.float64)), 0, 255)
        return 16.0 + (rgb @ weights) / 255.0

    x, y = to_y(sr), to_y(hr)
    offsets = np.arange(11) - 5.0
    g = np.exp(-(offsets**2) / (2 * 1.5**2))
    window = np.outer(g, g)
    window /= window.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    rows, cols = x.shape[0] - 10, x.shape[1] - 10
    total = 0.0
    for i in range(rows):
        for j in range(cols):
            px = x[i : i + 11, j : j + 11]
            py = y[i : i + 11, j : j + 11]
            mx = float(np.sum(window * px))
            my = float(np.sum(window * py))
            vx = float(np.sum(window * px * px)) - mx * mx
            vy = float(np.sum(window * py * py)) - my * my
            cxy = float(np.sum(window * px * py)) - mx * my
            total += ((2 * mx * my + c1) * (2 * cxy + c2)) / (
                (mx * mx + my * my + c1) * (vx + vy + c2)
            )
    return total / (rows * cols)


def test_ssim_y_identical_is_one() -> None:
    """An image compared with itself scores exactly 1."""
    hr = _natural()
    assert ssim_y(hr, hr.copy(), 4) == pytest.approx(1.0, abs=1e-12)


def test_ssim_y_matches_slow_reference() -> None:
    """The separable sliding-window SSIM equals a direct 2-D loop implementation."""
    hr = _natural()
    sr = _degraded(hr)
    hr_crop = hr[100:140, 60:100]
    sr_crop = sr[100:140, 60:100]
    fast = ssim_y(sr_crop, hr_crop, 0)
    slow = _reference_ssim_y(sr_crop, hr_crop)
    assert 0.0 < fast < 1.0
    assert fast == pytest.approx(slow, abs=1e-10)


# ------------------------------------------------------------------------------ crop_border


def test_crop_border_ignores_border_pixels() -> None:
    """Changing pixels inside the cropped border leaves both scores unchanged."""
    hr = _natural()
    sr = _degraded(hr)
    border = 4
    altered = sr.copy()
    altered[:border] = 0
    altered[-border:] = 255
    altered[:, :border] = 17
    altered[:, -border:] = 200
    assert psnr_y(altered, hr, border) == psnr_y(sr, hr, border)
    assert ssim_y(altered, hr, border) == ssim_y(sr, hr, border)
    inner = sr.copy()
    inner[border, border] = 255 - inner[border, border]
    assert psnr_y(inner, hr, border) != psnr_y(sr, hr, border)


# ------------------------------------------------------------------------------ literature


@needs_set5
def test_set5_bicubic_baseline_matches_literature() -> None:
    """Bicubic Set5 PSNR/SSIM (Y, crop=scale) match the values every SR paper tables."""
    published = {2: (33.66, 0.9299), 3: (30.39, 0.8682), 4: (28.42, 0.8104)}
    for scale, (paper_psnr, paper_ssim) in published.items():
        psnrs, ssims = [], []
        for name in SET5_NAMES:
            hr = modcrop(read_image(SET5 / "HR" / f"{name}.png"), scale)
            lr = read_image(SET5 / "LR_bicubic" / f"X{scale}" / f"{name}x{scale}.png")
            sr = imresize(lr, scale)
            psnrs.append(psnr_y(sr, hr, scale))
            ssims.append(ssim_y(sr, hr, scale))
        assert float(np.mean(psnrs)) == pytest.approx(paper_psnr, abs=0.02)
        assert float(np.mean(ssims)) == pytest.approx(paper_ssim, abs=0.001)
