"""SR quality metrics computed exactly as the SR literature reports them.

Published ELAN numbers are PSNR/SSIM on the BT.601 Y channel of 8-bit images with `scale`
pixels cropped from each border (BasicSR `calculate_psnr`/`calculate_ssim` with
`test_y_channel=True`, itself a port of Wang et al.'s MATLAB `ssim_index`). Any deviation
(no rounding to uint8, RGB instead of Y, padding instead of 'valid' filtering) moves the
numbers by tenths of a dB, so every step is reproduced here.
"""

from __future__ import annotations

import math

import numpy as np

from elan_deploy.imaging import rgb_to_y, to_uint8

__all__ = ["psnr", "psnr_from_mse", "psnr_y", "ssim_y"]

_PEAK = 255.0
_SSIM_C1 = (0.01 * _PEAK) ** 2
_SSIM_C2 = (0.03 * _PEAK) ** 2
_SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5


def _check_same_shape(a: np.ndarray, b: np.ndarray) -> None:
    """Metrics compare pixel by pixel, so the shapes must agree exactly."""
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}; compare images of equal size")


def _prepare_y(sr: np.ndarray, hr: np.ndarray, crop_border: int) -> tuple[np.ndarray, np.ndarray]:
    """Round both images to uint8 (as if saved to PNG), take Y, crop the border.

    Rounding first matters: the literature evaluates saved 8-bit outputs, not raw floats.
    """
    sr_arr = np.asarray(sr)
    hr_arr = np.asarray(hr)
    _check_same_shape(sr_arr, hr_arr)
    if sr_arr.ndim != 3 or sr_arr.shape[2] != 3:
        raise ValueError(f"expected HxWx3 RGB images, got shape {sr_arr.shape}")
    if int(crop_border) != crop_border or crop_border < 0:
        raise ValueError(f"crop_border must be a non-negative integer, got {crop_border}")
    border = int(crop_border)
    height, width = sr_arr.shape[:2]
    if 2 * border >= height or 2 * border >= width:
        raise ValueError(
            f"crop_border={border} leaves nothing of a {height}x{width} image; use a smaller border"
        )
    sr_y = rgb_to_y(to_uint8(sr_arr))
    hr_y = rgb_to_y(to_uint8(hr_arr))
    if border:
        sr_y = sr_y[border:-border, border:-border]
        hr_y = hr_y[border:-border, border:-border]
    return sr_y, hr_y


def psnr_from_mse(mse: float, peak: float) -> float:
    """PSNR in dB; identical inputs (MSE 0) are infinitely good rather than a division error,
    and a NaN MSE (non-finite outputs) gives NaN."""
    if math.isnan(mse):
        return math.nan
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(peak * peak / mse)


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """Plain PSNR on arrays of any shape, no rounding or cropping (engine-vs-reference fidelity)."""
    a_arr = np.asarray(a, dtype=np.float64)
    b_arr = np.asarray(b, dtype=np.float64)
    _check_same_shape(a_arr, b_arr)
    if a_arr.size == 0:
        raise ValueError("psnr got empty arrays; pass non-empty images")
    mse = float(np.mean((a_arr - b_arr) ** 2))
    return psnr_from_mse(mse, float(peak))


def psnr_y(sr: np.ndarray, hr: np.ndarray, crop_border: int) -> float:
    """Y-channel PSNR (peak 255) after uint8 rounding and border crop, as in SR papers."""
    sr_y, hr_y = _prepare_y(sr, hr, crop_border)
    mse = float(np.mean((sr_y - hr_y) ** 2))
    return psnr_from_mse(mse, _PEAK)


def _gaussian_kernel_1d(size: int = _SSIM_WINDOW, sigma: float = _SSIM_SIGMA) -> np.ndarray:
    """Normalised 1-D Gaussian (cv2.getGaussianKernel); its outer product is the 2-D window."""
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    kernel = np.exp(-(offsets**2) / (2.0 * sigma * sigma))
    return kernel / kernel.sum()


def _filter_valid(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable 'valid' 2-D Gaussian filter: output shrinks by len(kernel) - 1 per axis.

    The kernel is symmetric, so correlation and convolution coincide.
    """
    size = kernel.size
    rows = np.lib.stride_tricks.sliding_window_view(image, size, axis=0) @ kernel
    return np.lib.stride_tricks.sliding_window_view(rows, size, axis=1) @ kernel


def _ssim_map(img1: np.ndarray, img2: np.ndarray) -> np.ndarray:
    """SSIM map of two float64 images (BasicSR `_ssim` / Wang et al. `ssim_index`)."""
    kernel = _gaussian_kernel_1d()
    mu1 = _filter_valid(img1, kernel)
    mu2 = _filter_valid(img2, kernel)
    mu1_sq = mu1 * mu1
    mu2_sq = mu2 * mu2
    mu1_mu2 = mu1 * mu2
    sigma1_sq = _filter_valid(img1 * img1, kernel) - mu1_sq
    sigma2_sq = _filter_valid(img2 * img2, kernel) - mu2_sq
    sigma12 = _filter_valid(img1 * img2, kernel) - mu1_mu2
    numerator = (2.0 * mu1_mu2 + _SSIM_C1) * (2.0 * sigma12 + _SSIM_C2)
    denominator = (mu1_sq + mu2_sq + _SSIM_C1) * (sigma1_sq + sigma2_sq + _SSIM_C2)
    return numerator / denominator


def ssim_y(sr: np.ndarray, hr: np.ndarray, crop_border: int) -> float:
    """Y-channel SSIM after uint8 rounding and border crop, as in SR papers."""
    sr_y, hr_y = _prepare_y(sr, hr, crop_border)
    if min(sr_y.shape) < _SSIM_WINDOW:
        raise ValueError(
            f"SSIM needs at least {_SSIM_WINDOW}x{_SSIM_WINDOW} pixels after cropping, "
            f"got {sr_y.shape[0]}x{sr_y.shape[1]}; use a larger image or smaller crop_border"
        )
    return float(np.mean(_ssim_map(sr_y, hr_y)))
