"""The range guard's ranges: every guard site's per-channel [min, max] on the T91 images.

The reference network (FP32, unguarded) runs on the x`scale` MATLAB-bicubic LR of every image of
the calibration folder (T91 by default: the calibration and the held-out split alike, since no
search runs on these ranges), and a forward hook on each site (`model.range_guard.guard_sites`)
keeps the running per-channel minimum and maximum. Test sets are refused as for INT8.

The result is cached as JSON in the cache root's `calibration/` folder, keyed by the checkpoint's
sha256, the scale, the images' bytes and this module's version, and written atomically under a
file lock, so concurrent builders measure once. It is computed for whatever checkpoint is loaded.
Measuring took two minutes on a 2-core AVX2 EPYC, so the ranges of the bundled weights on the full T91
ship in `calibration/ranges/` (written by `python -m elan_deploy.calibration.ranges --write-bundled
DATA_ROOT/T91`; a slow test measures them again and compares).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from elan_deploy.calibration.data import CalibrationImages, _lr, _read_checked, calibration_cache_dir, calibration_images, to_nchw
from elan_deploy.console import StepProgress
from elan_deploy.errors import DatasetError
from elan_deploy.fileio import write_json_atomic
from elan_deploy.model.checkpoint import LoadedCheckpoint
from elan_deploy.model.range_guard import RangeGuard, guard_sites

_VERSION = 4
SHIPPED = Path(__file__).resolve().parent / "ranges"


class _RunningRange:
    """Per-channel min/max of one site's output over every image seen."""

    def __init__(self) -> None:
        self.low: torch.Tensor | None = None
        self.high: torch.Tensor | None = None

    def __call__(self, _module, _inputs, output: torch.Tensor) -> None:
        low, high = output.amin(dim=(0, 2, 3)), output.amax(dim=(0, 2, 3))
        self.low = low if self.low is None else torch.minimum(self.low, low)
        self.high = high if self.high is None else torch.maximum(self.high, high)


def measure_ranges(loaded: LoadedCheckpoint, images: list[np.ndarray], source: str,
                   progress: Callable[[int, int], None] | None = None, sites: list[str] | None = None) -> RangeGuard:
    """Run the unguarded reference on `images` (HxWx3 uint8 LR) and record the range of every
    site (`guard_sites`, or the module names `sites`)."""
    model = loaded.model.eval()
    sites = guard_sites(model) if sites is None else sites
    recorders = {site: _RunningRange() for site in sites}
    handles = [model.get_submodule(site).register_forward_hook(recorders[site]) for site in sites]
    try:
        with torch.inference_mode():
            for i, image in enumerate(images):
                model(torch.from_numpy(to_nchw(image)))
                if progress is not None:
                    progress(i + 1, len(images))
    finally:
        for handle in handles:
            handle.remove()
    low = {s: r.low.double().numpy().astype(np.float32) for s, r in recorders.items() if r.low is not None}
    high = {s: r.high.double().numpy().astype(np.float32) for s, r in recorders.items() if r.high is not None}
    return RangeGuard(low, high, source)


def _cache_path(loaded: LoadedCheckpoint, images_digest: str, folder: Path) -> Path:
    key = hashlib.sha256(f"{_VERSION}:{loaded.sha256}:{loaded.config.model_id}:{images_digest}".encode()).hexdigest()
    return folder / f"ranges-{loaded.config.model_id}-{key[:20]}.json"


def shipped_path(loaded: LoadedCheckpoint) -> Path:
    """Where the ranges of a checkpoint measured on the full T91 ship with the package (if they do)."""
    return SHIPPED / f"{loaded.config.model_id}-{loaded.sha256[:16]}.json"


def shipped_guard(loaded: LoadedCheckpoint) -> RangeGuard | None:
    """The shipped ranges of `loaded` (the bundled weights), or None for any other checkpoint."""
    path = shipped_path(loaded)
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if data.get("checkpoint_sha256") != loaded.sha256:
        return None
    guard = RangeGuard.from_json(data)
    guard.check_fits(loaded.model)
    return guard


MEASURE_STEP = "measure the range guard on T91 (first use of this checkpoint; cached after)"


def calibrated_guard(loaded: LoadedCheckpoint, calib_dir: Path | str | None = None, cache_dir: Path | None = None,
                     progress: StepProgress | None = None) -> RangeGuard:
    """The range guard of `loaded` measured on the calibration folder (T91): shipped, cached or measured now.

    Measuring takes minutes on a small CPU; it shows on `progress` as its own step, image by
    image, and only when it runs."""
    from filelock import FileLock

    if calib_dir is None and (shipped := shipped_guard(loaded)) is not None:
        return shipped
    split = calibration_images(calib_dir)
    folder = Path(cache_dir) if cache_dir is not None else calibration_cache_dir()
    path = _cache_path(loaded, split.digest(), folder)
    cached = _read(path, loaded)
    if cached is not None:
        return cached
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / f".{path.name}.lock")):
        cached = _read(path, loaded)
        if cached is not None:
            return cached
        if progress is not None:
            progress.start(MEASURE_STEP, None)
        on_image = None if progress is None else (lambda done, total: progress.update(completed=done, total=total))
        guard = _measure_folder(loaded, split, on_image)
        write_json_atomic(path, guard.to_json())
    return guard


def _measure_folder(loaded: LoadedCheckpoint, split: CalibrationImages, progress: Callable[[int, int], None] | None,
                    sites: list[str] | None = None) -> RangeGuard:
    scale = loaded.config.scale
    images = [lr for lr, _ in (_lr(hr, scale) for hr in _read_checked(split.calibration + split.heldout).values())]
    images = [lr for lr in images if min(lr.shape[:2]) >= 2]
    if not images:
        raise DatasetError(f"calibration images in '{split.folder}' are too small for x{scale}; pass --calib-dir with larger training images")
    kind = "T91" if split.folder.name.lower() == "t91" else ("T91 bundled subset" if split.bundled else f"folder {split.folder.name}")
    return measure_ranges(loaded, images, f"{kind}: {len(images)} images, x{scale} bicubic LR, per-channel min/max", progress, sites)


def measure_calibration_set(loaded: LoadedCheckpoint, sites: list[str] | None = None, calib_dir: Path | str | None = None,
                            progress: Callable[[int, int], None] | None = None) -> RangeGuard:
    """Measure now, uncached, on the calibration folder (T91): the guard's sites, or any module names."""
    return _measure_folder(loaded, calibration_images(calib_dir), progress, sites)


def write_shipped(loaded: LoadedCheckpoint, t91: Path) -> Path:
    """Measure `loaded` on the full T91 folder and write the file that ships with the package."""
    split = calibration_images(t91)
    guard = _measure_folder(loaded, split, lambda done, total: print(f"{done}/{total}", end="\r", flush=True))
    data = {**guard.to_json(), "checkpoint_sha256": loaded.sha256, "images_sha256": split.digest()}
    path = shipped_path(loaded)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, separators=(",", ":")) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    import argparse

    from elan_deploy.model import load_bundled

    parser = argparse.ArgumentParser(description="measure the bundled weights' range guard on T91 and write the shipped file")
    parser.add_argument("--write-bundled", type=Path, required=True, metavar="T91", help="the full T91 folder")
    args = parser.parse_args(argv)
    print(write_shipped(load_bundled(), args.write_bundled))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def _read(path: Path, loaded: LoadedCheckpoint) -> RangeGuard | None:
    """A cached guard that parses and fits the network, else None (it is measured again)."""
    try:
        guard = RangeGuard.from_json(json.loads(path.read_text()))
        guard.check_fits(loaded.model)
    except Exception:  # noqa: BLE001 - any damaged entry is re-measured
        return None
    return guard
