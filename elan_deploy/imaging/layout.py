"""Array layout between images (HxWx3) and network tensors (1x3xHxW)."""

from __future__ import annotations

import numpy as np


def hwc_to_nchw(image: np.ndarray) -> np.ndarray:
    """HxWx3 image -> contiguous float32 1x3xHxW tensor for the network."""
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"hwc_to_nchw expects an HxWx3 array, got shape {array.shape}")
    return np.ascontiguousarray(array.transpose(2, 0, 1)[None], dtype=np.float32)


def nchw_to_hwc(tensor: np.ndarray) -> np.ndarray:
    """1x3xHxW or 3xHxW network output -> contiguous float32 HxWx3 image."""
    array = np.asarray(tensor)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3 or array.shape[0] != 3:
        raise ValueError(f"nchw_to_hwc expects a 1x3xHxW or 3xHxW array, got shape {array.shape}")
    return np.ascontiguousarray(array.transpose(1, 2, 0), dtype=np.float32)
