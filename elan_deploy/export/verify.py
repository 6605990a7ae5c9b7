"""Run an exported graph in ONNX Runtime and compare it with the reference ELAN.

Used by `export_onnx` before the file is renamed into place, so every ONNX file the toolkit
writes has been executed once against the reference, at the traced shape and at another batch
and size (which catches a trace that baked a shape into the graph).

The probe image is smooth and structured, like a photo. Uniform noise is deliberately not used:
ELAN's unscaled softmax(q·qᵀ) turns noise into outputs around 1e5, where a 1e-3 tolerance on
the 0..255 scale means nothing.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from elan_deploy.model.elan import ELAN


def probe_image(batch: int, height: int, width: int) -> np.ndarray:
    """N,3,H,W float32 in 0..255: gradients, soft edges and a few frequencies, different per sample."""
    y = np.arange(height, dtype=np.float64)[:, None]
    x = np.arange(width, dtype=np.float64)[None, :]
    images = []
    for n in range(batch):
        phase = 0.7 * n
        base = 0.5 + 0.3 * np.sin(x / 9.0 + phase) * np.cos(y / 13.0 - phase)
        edge = 0.2 * np.tanh((x - width * 0.4 - 3.0 * np.sin(y / 5.0)) / 2.0)
        ramp = 0.15 * (y / max(height - 1, 1)) - 0.1 * (x / max(width - 1, 1))
        channels = [base + edge + ramp, base - 0.5 * edge + 0.05 * np.cos(y / 3.0), 0.8 * base + 0.3 * ramp + 0.05 * np.sin((x + y) / 4.0)]
        images.append(np.stack(channels))
    return (np.clip(np.stack(images), 0.0, 1.0) * 255.0).astype(np.float32)


def verify_shapes(trace_size: tuple[int, int], dynamic_batch: bool) -> list[tuple[int, int, int]]:
    """The traced (1, H, W) and a different (N, H', W') that the dynamic axes must handle."""
    h, w = trace_size
    other = (2 if dynamic_batch else 1, h + 16, w + 32)
    return [(1, h, w), other]


def max_error_onnxruntime(onnx_bytes: bytes, reference: ELAN, shapes: list[tuple[int, int, int]]) -> float:
    """Largest |ORT − reference| over the probe images of the given (N, H, W) shapes.

    Any NaN or Inf in either output makes the error infinite: `max` over a NaN keeps the
    other operand, so without this an all-NaN graph would "verify" with error 0.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    worst = 0.0
    for batch, height, width in shapes:
        x = probe_image(batch, height, width)
        with torch.no_grad():
            expected = reference(torch.from_numpy(x)).numpy()
        got = session.run(None, {session.get_inputs()[0].name: x})[0]
        if got.shape != expected.shape or not (np.isfinite(got).all() and np.isfinite(expected).all()):
            return math.inf
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst
