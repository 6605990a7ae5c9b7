"""INT8 calibration data: MATLAB-bicubic LR patches from T91, and a held-out T91 split.

Why T91: it is the classic SR *training* set, disjoint from every benchmark, so ranges fitted
on it say nothing flattering about Set5/Set14/B100 (the guard refuses those outright). LR is
made exactly like the benchmarks' LR (`imresize(modcrop(hr, s), 1/s)`, MATLAB bicubic, uint8),
so calibration sees the input distribution the engines are scored on.

- Calibration images: every T91 image except every 5th (sorted by name). The held-out images
  (every 5th) are never calibrated on: the quantizer's own PSNR checks and its mixed-precision
  search run on them, never on the test sets.
- Patches: `patches` LR crops of `patch_size` (a multiple of 16, the window multiple), at
  positions drawn from `numpy.random.default_rng(seed)`, images visited in a seeded order.
  Most T91 images are smaller than 64 px at x4 (median HR 246x188 -> LR 61x47), so a crop
  side is min(patch_size, the LR side floored to 16): smaller crops keep natural content
  instead of mirrored padding. Images under 16 LR pixels on a side are skipped.
- Cache: the patches (uint8, exact) are stored as one `.npz` of `.npy` arrays in the cache
  folder, written atomically, keyed by the images' bytes and the settings.
- Data root: `--calib-dir`, else `T91/` under `$ELAN_DEPLOY_DATA`, `./data` or
  `../shared/data` (as `datasets.resolve_data_root` searches), else the small T91 subset
  bundled in `calibration/samples/` so the default path runs anywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from elan_deploy.calibration.guard import refuse_test_images, refuse_test_set_folder
from elan_deploy.datasets import DATA_ROOT_ENV, candidate_roots
from elan_deploy.errors import DatasetError, ElanDeployError
from elan_deploy.fileio import atomic_path, file_sha256
from elan_deploy.geometry import MULTIPLE  # ELAN's window grid: LR crops are multiples of it
from elan_deploy.imaging import imresize, list_images, modcrop, read_image


BUNDLED_SAMPLES = Path(__file__).resolve().parent / "samples"
T91 = "T91"
HELDOUT_EVERY = 5
_CACHE_VERSION = 1

__all__ = [
    "BUNDLED_SAMPLES",
    "CalibrationImages",
    "HeldoutSample",
    "PatchSpec",
    "calibration_cache_dir",
    "calibration_images",
    "hard_edge_crops",
    "heldout_samples",
    "load_patches",
    "make_patches",
    "resolve_calibration_dir",
    "to_nchw",
]


@dataclass(frozen=True)
class PatchSpec:
    """Which calibration patches to make (every field keys the cache)."""

    scale: int = 4
    patches: int = 64
    patch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.patch_size < MULTIPLE or self.patch_size % MULTIPLE:
            raise ElanDeployError(f"patch size {self.patch_size} must be a positive multiple of {MULTIPLE}")
        if self.patches < 1:
            raise ElanDeployError(f"patch count {self.patches} must be at least 1")
        if self.scale not in (2, 3, 4):
            raise ElanDeployError(f"scale {self.scale} must be 2, 3 or 4")


@dataclass(frozen=True)
class HeldoutSample:
    name: str
    lr: np.ndarray  # hxwx3 uint8, h and w multiples of 16
    hr: np.ndarray  # (s·h)x(s·w)x3 uint8


@dataclass(frozen=True)
class CalibrationImages:
    """A calibration folder split into calibration and held-out images."""

    folder: Path
    calibration: tuple[Path, ...]
    heldout: tuple[Path, ...]
    bundled: bool

    @property
    def label(self) -> str:
        """What `int8_calibration` metadata says about the data."""
        kind = "T91 bundled subset" if self.bundled else (T91 if self.folder.name.lower() == "t91" else f"folder {self.folder.name}")
        return f"{kind}: {len(self.calibration)} images, held-out every {HELDOUT_EVERY}th ({len(self.heldout)} images)"

    def digest(self) -> str:
        """sha256 over the image names and bytes: patches are re-made when any image changes."""
        h = hashlib.sha256()
        for path in self.calibration + self.heldout:
            h.update(f"{path.name}:{file_sha256(path)}\n".encode())
        return h.hexdigest()


def calibration_cache_dir() -> Path:
    """Inside the cache root: `$ELAN_DEPLOY_CACHE/calibration` or ~/.cache/elan-deploy/calibration."""
    from elan_deploy.scratch import cache_root

    return cache_root() / "calibration"


def _default_t91() -> Path | None:
    roots = [Path(env)] if (env := os.environ.get(DATA_ROOT_ENV)) else []
    for root in roots + candidate_roots():
        folder = root / T91
        if folder.is_dir() and list_images(folder):
            return folder
    return None


def resolve_calibration_dir(calib_dir: Path | str | None = None) -> Path:
    """`--calib-dir`, else T91 under the data root, else the bundled T91 subset."""
    if calib_dir is None:
        return _default_t91() or BUNDLED_SAMPLES
    folder = Path(calib_dir)
    if not folder.is_dir():
        raise DatasetError(f"calibration folder '{folder}' does not exist; pass --calib-dir with T91-like training images")
    refuse_test_set_folder(folder)
    return folder


def calibration_images(calib_dir: Path | str | None = None) -> CalibrationImages:
    """The calibration folder's images, split: every 5th (by name) is held out."""
    folder = resolve_calibration_dir(calib_dir)
    paths = list_images(folder)
    if not paths:
        raise DatasetError(f"calibration folder '{folder}' holds no PNG/JPEG/BMP/TIFF images; pass --calib-dir with T91-like training images")
    if len(paths) < 2:
        raise DatasetError(f"calibration folder '{folder}' holds 1 image; at least 2 are needed (one is held out for the PSNR checks)")
    heldout = paths[HELDOUT_EVERY - 1 :: HELDOUT_EVERY] or paths[-1:]
    # T91 holds byte-identical twins (t36 = t65): a held-out image's twin must not calibrate.
    held = {file_sha256(p) for p in heldout}
    calibration = [p for p in paths if p not in heldout and file_sha256(p) not in held]
    if not calibration:
        raise DatasetError(f"calibration folder '{folder}' leaves no image to calibrate on after the held-out split; add more images")
    return CalibrationImages(folder, tuple(calibration), tuple(heldout), bundled=folder.resolve() == BUNDLED_SAMPLES)


def _read_checked(paths: tuple[Path, ...]) -> dict[Path, np.ndarray]:
    images = {p: read_image(p) for p in paths}
    refuse_test_images(images)
    return images


def _lr(hr: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    hr = modcrop(hr, scale)
    return imresize(hr, scale=1 / scale), hr


def _floor16(n: int, cap: int) -> int:
    return min(cap, n - n % MULTIPLE)


def make_patches(images: CalibrationImages, spec: PatchSpec) -> list[np.ndarray]:
    """`spec.patches` LR crops (hxwx3 uint8, h and w multiples of 16), deterministic for a seed."""
    decoded = _read_checked(images.calibration + images.heldout)  # the held-out split must not be a test set either
    lrs = [lr for lr, _ in (_lr(decoded[p], spec.scale) for p in images.calibration)]
    lrs = [lr for lr in lrs if min(lr.shape[:2]) >= MULTIPLE]
    if not lrs:
        raise DatasetError(
            f"calibration images in '{images.folder}' are all smaller than {MULTIPLE * spec.scale} px; "
            f"x{spec.scale} calibration needs LR crops of at least {MULTIPLE} px"
        )
    rng = np.random.default_rng(spec.seed)
    order = rng.permutation(len(lrs))
    patches = []
    for i in range(spec.patches):
        lr = lrs[order[i % len(lrs)]]
        h, w = _floor16(lr.shape[0], spec.patch_size), _floor16(lr.shape[1], spec.patch_size)
        y = int(rng.integers(0, lr.shape[0] - h + 1))
        x = int(rng.integers(0, lr.shape[1] - w + 1))
        patches.append(np.ascontiguousarray(lr[y : y + h, x : x + w]))
    return patches


def load_patches(spec: PatchSpec, calib_dir: Path | str | None = None, cache_dir: Path | None = None) -> tuple[list[np.ndarray], CalibrationImages]:
    """Cached `make_patches` (uint8 HxWx3 crops) and the image split they came from."""
    images = calibration_images(calib_dir)
    key = hashlib.sha256(json.dumps({"v": _CACHE_VERSION, "spec": asdict(spec), "images": images.digest()}, sort_keys=True).encode()).hexdigest()
    folder = Path(cache_dir) if cache_dir is not None else calibration_cache_dir()
    path = folder / f"patches-x{spec.scale}-{key[:20]}.npz"
    if path.is_file():
        try:
            with np.load(path) as data:
                return [data[k] for k in sorted(data.files)], images
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache entry is rebuilt below
    patches = make_patches(images, spec)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **{f"p{i:05d}": p for i, p in enumerate(patches)})
    return patches, images


def heldout_samples(images: CalibrationImages, scale: int, size: int = 64) -> list[HeldoutSample]:
    """Centre LR crops (side min(size, LR side floored to 16)) of the held-out images and their HR.

    Crops are multiples of 16 so they go to an engine without padding; `size` bounds the
    cost of every PSNR check during the mixed-precision search.
    """
    if not images.heldout:
        raise DatasetError(f"calibration folder '{images.folder}' has no held-out image; add more images")
    samples = []
    for path, image in _read_checked(images.heldout).items():
        lr, hr = _lr(image, scale)
        h, w = _floor16(lr.shape[0], size), _floor16(lr.shape[1], size)
        if h < MULTIPLE or w < MULTIPLE:
            continue
        y, x = (lr.shape[0] - h) // 2, (lr.shape[1] - w) // 2
        samples.append(
            HeldoutSample(
                path.stem, np.ascontiguousarray(lr[y : y + h, x : x + w]),
                np.ascontiguousarray(hr[y * scale : (y + h) * scale, x * scale : (x + w) * scale]),
            )
        )
    if not samples:
        raise DatasetError(f"held-out images in '{images.folder}' are too small for x{scale} (need {MULTIPLE * scale} px)")
    return samples


def hard_edge_crops(samples: list[HeldoutSample]) -> list[np.ndarray]:
    """The held-out LR crops cut to the eight saturated colours (each channel 0 or 255 at mid-grey).

    What users feed an upscaler also includes text, QR codes, UI and flat colour: hard edges
    between saturated colours that no T91 photograph holds, where INT8's per-tensor activation
    ranges (fitted on photographs) lose far more than on T91 itself. These crops keep T91's
    shapes with those edges and colours, so the INT8 search can hold the engine to the FP32
    model on such inputs while still calibrating and checking on T91 only.
    """
    return [np.where(s.lr >= 128, 255, 0).astype(np.uint8) for s in samples]


def to_nchw(image: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 -> 1x3xHxW float32 0..255 (the engines' input)."""
    return np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32)
