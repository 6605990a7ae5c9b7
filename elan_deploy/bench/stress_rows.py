"""The stress set as a bench dataset (`--dataset stress`): what each engine does off the photo domain.

Set5 and Set14 are photographs, where every engine agrees with the paper model; the inputs that
break ELAN are rendered text, UI, QR codes, pixel art, line art and flat colour
(`elan_deploy.stress`). For every cell the bench runs the stress set's two uses through the same
Upscaler as the benchmark sets and writes one quality row with dataset "stress":

- `psnr`/`ssim`: the paper's Y metrics on the HR renders' bicubic downscales against the renders,
  so the column sits beside Set5/Set14's and Δ dB means the same;
- on the raw inputs: the raw output range, the worst image's flat share per class, the worst
  fidelity (PSNR) to the range-guarded PyTorch FP32 model, and whether the cell holds
  (`StressScores.failures`: the range guard's acceptance bounds), with the reasons when not.

The guarded FP32 outputs are computed once per run, whatever model the cells run, so the
unguarded reference row shows how far the paper model itself is from them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from elan_deploy.imaging import to_uint8
from elan_deploy.metrics import psnr_y, ssim_y
from elan_deploy.model.checkpoint import LoadedCheckpoint
from elan_deploy.runtimes import EngineLoader, ModelSource
from elan_deploy.stress import STRESS_DATASET, StressImage, score_raw_outputs, stress_set
from elan_deploy.upscale import Upscaler

__all__ = ["STRESS_DATASET", "StressSet", "guarded_reference", "stress_fields"]

Upscale = Callable[[np.ndarray], np.ndarray]  # HxWx3 float in 0..255 -> sHxsWx3 float, unclipped


@dataclass
class StressSet:
    """The images of one run and the guarded FP32 outputs on their raw inputs (computed on first use)."""

    scale: int
    reference_upscale: Callable[[], Upscale]  # opens the guarded torch FP32 engine when first needed
    images: list[StressImage] | None = None
    reference: list[np.ndarray] | None = None

    def prepared(self) -> tuple[list[StressImage], list[np.ndarray]]:
        if self.images is None:
            self.images = stress_set(self.scale)
        if self.reference is None:
            upscale = self.reference_upscale()
            self.reference = [upscale(image.lr.astype(np.float32)) for image in self.images]
        return self.images, self.reference


def stress_fields(stress: StressSet, upscale: Upscale, precision: str) -> dict[str, Any]:
    """The stress row's fields for one engine: `images`, `psnr`, `ssim` and `extra` (see the module doc)."""
    images, reference = stress.prepared()
    raw = [upscale(image.lr.astype(np.float32)) for image in images]
    downscaled = [to_uint8(upscale(image.hr_lr.astype(np.float32))) for image in images]
    scores = score_raw_outputs(images, raw, stress.scale, reference)
    failures = scores.failures(precision)
    fidelity = scores.worst_fidelity_db
    extra: dict[str, Any] = {
        "raw_min": _finite(scores.raw_min), "raw_max": _finite(scores.raw_max), "flat_share": scores.flat_share,
        "stress_fidelity_db": "inf" if fidelity == float("inf") else fidelity, "stress_holds": not failures,
    }
    if failures:
        extra["stress_failures"] = failures
    metrics = [(psnr_y(sr, image.hr, stress.scale), ssim_y(sr, image.hr, stress.scale)) for sr, image in zip(downscaled, images)]
    return {
        "images": len(images), "psnr": round(float(np.mean([m[0] for m in metrics])), 4),
        "ssim": round(float(np.mean([m[1] for m in metrics])), 4), "extra": extra,
    }


def _finite(value: float) -> float | None:
    """JSON has no NaN: a non-finite output range is written as null (and the row says why it fails)."""
    return round(value, 1) if np.isfinite(value) else None


def guarded_reference(loaded: LoadedCheckpoint, threads: int | None, cache_root) -> Callable[[], Upscale]:
    """Opens the range-guarded PyTorch FP32 model when the first stress row needs it."""

    def open_upscaler() -> Upscale:
        engine = EngineLoader(ModelSource(loaded, guard=True), "torch", "fp32", None, threads, cache_root).open()
        return Upscaler(engine, loaded.config.scale, tile=None, multiple=loaded.config.window_multiple)

    return open_upscaler
