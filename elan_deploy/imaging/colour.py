"""Colour conversions as MATLAB does them: RGB <-> YCbCr and the Y channel of the SR metrics.

The literature reports Y-channel metrics through MATLAB's `rgb2ycbcr`, so its matrix is
reproduced here exactly: a different colour matrix would shift reported PSNR by tenths of a dB.
"""

from __future__ import annotations

import numpy as np

# MATLAB rgb2ycbcr (ITU-R BT.601, "studio swing" 16..235 / 16..240) on the 0..255 scale.
_YCBCR_MATRIX: np.ndarray = np.array(
    [
        [65.481, 128.553, 24.966],
        [-37.797, -74.203, 112.0],
        [112.0, -93.786, -18.214],
    ],
    dtype=np.float64,
) / 255.0
_YCBCR_OFFSET: np.ndarray = np.array([16.0, 128.0, 128.0], dtype=np.float64)
_YCBCR_INVERSE: np.ndarray = np.linalg.inv(_YCBCR_MATRIX)


def _check_rgb(image: np.ndarray, name: str) -> np.ndarray:
    """Return the image as float64, insisting on a trailing channel axis of 3."""
    array = np.asarray(image)
    if array.ndim < 1 or array.shape[-1] != 3:
        raise ValueError(f"{name} expects an ...x3 array, got shape {array.shape}")
    return array.astype(np.float64)


def rgb_to_y(image: np.ndarray) -> np.ndarray:
    """BT.601 luma on 16..235 from 0..255 RGB, as MATLAB rgb2ycbcr (used by SR metrics)."""
    rgb = _check_rgb(image, "rgb_to_y")
    return 16.0 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255.0


def rgb_to_ycbcr(image: np.ndarray) -> np.ndarray:
    """MATLAB rgb2ycbcr on the 0..255 scale (float64, no rounding)."""
    rgb = _check_rgb(image, "rgb_to_ycbcr")
    return rgb @ _YCBCR_MATRIX.T + _YCBCR_OFFSET


def ycbcr_to_rgb(image: np.ndarray) -> np.ndarray:
    """Exact inverse of `rgb_to_ycbcr` (MATLAB ycbcr2rgb on the 0..255 scale, float64)."""
    ycc = _check_rgb(image, "ycbcr_to_rgb")
    return (ycc - _YCBCR_OFFSET) @ _YCBCR_INVERSE.T

