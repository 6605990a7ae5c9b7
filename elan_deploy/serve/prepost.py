"""Request checks and the pre/post-processing around the network, in plain NumPy.

This module imports nothing but NumPy on purpose: `elan-deploy serve` uses its checks, and
`elan-deploy triton-repo` copies it beside the Python-backend model of the repository, where
it runs inside a stock Triton container that has NumPy but not elan-deploy. The padding
comes from `geometry.py` (NumPy only too), shipped beside it, which the Upscaler uses as well.

Wire format, the same for `serve` and the repository's ensemble: input `image`, UINT8
[N, H, W, 3] RGB; output `image`, UINT8 [N, sH, sW, 3].
"""

from __future__ import annotations

import re

import numpy as np

try:  # inside the toolkit
    from elan_deploy.geometry import pad_reflect, round_up
except ImportError:  # in a Triton model repository, geometry.py lies beside this file
    try:
        from .geometry import pad_reflect, round_up
    except ImportError:  # loaded as a top-level module
        from geometry import pad_reflect, round_up

DEFAULT_MAX_PIXELS = 2048 * 2048  # LR pixels per request (all images of the batch together)


class BadRequest(ValueError):
    """A request the model refuses; the message names what is wrong and what is accepted."""


def check_images(batch: np.ndarray, max_pixels: int) -> np.ndarray:
    """Validate one request's `image` tensor: UINT8 [N, H, W, 3], no zero dimension, bounded size.

    Triton already refuses a wrong dtype, rank or channel count against the model config; the
    checks are repeated here so the model never trusts its caller. The pixel limit bounds the
    memory one request can take (the output is scale² times larger than the input).
    """
    batch = np.asarray(batch)
    if batch.dtype != np.uint8:
        raise BadRequest(f"input 'image' must be UINT8, got {batch.dtype}")
    if batch.ndim != 4:
        raise BadRequest(f"input 'image' must be [N, H, W, 3] (rank 4), got shape {list(batch.shape)}")
    if batch.shape[3] != 3:
        raise BadRequest(f"input 'image' must have 3 channels (RGB) in its last dimension, got shape {list(batch.shape)}")
    if 0 in batch.shape:
        raise BadRequest(f"input 'image' has a zero-size dimension: shape {list(batch.shape)}")
    pixels = int(batch.shape[0]) * int(batch.shape[1]) * int(batch.shape[2])
    if pixels > max_pixels:
        raise BadRequest(
            f"input 'image' has {pixels} pixels (N*H*W for shape {list(batch.shape)}), over this server's limit of "
            f"{max_pixels}; send smaller images or fewer per request"
        )
    return batch


def last_error_line(text: str, limit: int = 500) -> str:
    """The exception line of a formatted Python traceback, without the exception's module path.

    `elan-deploy serve`'s Python-backend model gets the inference callable's failures as PyTriton's
    formatted traceback, which names files on the server; a client gets one line: the message, or
    the bare exception name when there is none.
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "At:" in lines:  # the Python backend's "At: <frames>" trailer, when the text passed through C++
        lines = lines[: len(lines) - 1 - lines[::-1].index("At:")]
    if not lines:
        return "inference failed"
    exception = re.fullmatch(r"(?:[A-Za-z_]\w*\.)*([A-Za-z_]\w*)(?:: (.*))?", lines[-1])
    line = lines[-1] if exception is None else exception.group(2) or f"inference failed: {exception.group(1)}"
    return line[:limit]


def preprocess(batch: np.ndarray, max_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """UINT8 [N, H, W, 3] -> (float32 [N, 3, H', W'] 0..255 padded to multiples of 16, int32 [N, 2] sizes)."""
    batch = check_images(batch, max_pixels)
    n, height, width, _ = batch.shape
    padded = np.stack([pad_reflect(img.astype(np.float32), round_up(height), round_up(width)) for img in batch])
    sizes = np.tile(np.array([[height, width]], dtype=np.int32), (n, 1))
    return np.ascontiguousarray(padded.transpose(0, 3, 1, 2)), sizes


def postprocess(sr: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """float [N, 3, sH', sW'] + int [N, 2] input sizes -> UINT8 [N, sH, sW, 3], cropped, rounded, clipped.

    NaN or Inf in the network output is an error, never a picture.
    """
    sr = np.asarray(sr)
    if not np.isfinite(sr).all():
        bad = int(sr.size - np.count_nonzero(np.isfinite(sr)))
        raise BadRequest(f"the network produced {bad} NaN/Inf value(s); serve an fp32 or bf16 engine")
    sizes = np.asarray(sizes).reshape(-1, 2)
    height, width = int(sizes[0, 0]), int(sizes[0, 1])
    if (sizes != sizes[0]).any():
        raise BadRequest("all images of one request must have the same size")
    padded_h = sr.shape[2]
    scale = padded_h // round_up(height)
    if scale < 1 or scale * round_up(height) != padded_h:
        raise BadRequest(f"network output of shape {list(sr.shape)} does not match input size {height}x{width}")
    cropped = sr[:, :, : height * scale, : width * scale].transpose(0, 2, 3, 1)
    return np.ascontiguousarray(np.clip(np.round(cropped), 0, 255).astype(np.uint8))
