"""Calibration data: T91 patches (deterministic, cached), held-out split.

No network runs here: these are the fast checks of `elan_deploy.calibration.data`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from elan_deploy.calibration import data as calib_data
from elan_deploy.calibration.data import (
    BUNDLED_SAMPLES,
    PatchSpec,
    calibration_images,
    hard_edge_crops,
    heldout_samples,
    load_patches,
    make_patches,
    resolve_calibration_dir,
)
from elan_deploy.errors import DatasetError, ElanDeployError
from elan_deploy.imaging import imresize, modcrop, read_image
from tests.helpers import one_line


def test_bundled_subset_is_small_licensed_and_split() -> None:
    pngs = sorted(BUNDLED_SAMPLES.glob("*.png"))
    assert len(pngs) >= 10
    assert sum(p.stat().st_size for p in BUNDLED_SAMPLES.iterdir()) < 1_000_000
    assert (BUNDLED_SAMPLES / "LICENSE.txt").is_file() and (BUNDLED_SAMPLES / "README.md").is_file()
    images = calibration_images(BUNDLED_SAMPLES)
    assert images.bundled
    assert images.heldout and images.calibration
    assert not set(images.heldout) & set(images.calibration)
    assert list(images.heldout) == pngs[4::5]


def test_default_root_falls_back_to_bundled(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("ELAN_DEPLOY_DATA", str(tmp_path))  # a data root without T91/
    monkeypatch.setattr(calib_data, "candidate_roots", lambda: [tmp_path])
    assert resolve_calibration_dir() == BUNDLED_SAMPLES


def test_default_root_finds_t91_under_the_data_root(monkeypatch, tmp_path) -> None:
    (tmp_path / "T91").mkdir()
    shutil.copy(sorted(BUNDLED_SAMPLES.glob("*.png"))[0], tmp_path / "T91")
    monkeypatch.setenv("ELAN_DEPLOY_DATA", str(tmp_path))
    assert resolve_calibration_dir() == tmp_path / "T91"


def test_patches_are_deterministic_lr_crops_on_the_window_grid(tmp_path) -> None:
    spec = PatchSpec(scale=4, patches=10, patch_size=32, seed=3)
    images = calibration_images(BUNDLED_SAMPLES)
    first, second = make_patches(images, spec), make_patches(images, spec)
    assert len(first) == 10
    assert all(a.dtype == np.uint8 and np.array_equal(a, b) for a, b in zip(first, second))
    assert all(p.shape[0] % 16 == 0 and p.shape[1] % 16 == 0 and max(p.shape[:2]) <= 32 for p in first)
    other = make_patches(images, PatchSpec(scale=4, patches=10, patch_size=32, seed=4))
    assert any(a.shape != b.shape or not np.array_equal(a, b) for a, b in zip(first, other))


def test_patches_are_matlab_bicubic_lr(tmp_path) -> None:
    """A patch is a crop of imresize(modcrop(hr, s), 1/s), the benchmarks' LR protocol."""
    folder = tmp_path / "calib"
    folder.mkdir()
    for png in sorted(BUNDLED_SAMPLES.glob("*.png"))[:2]:
        shutil.copy(png, folder)
    images = calibration_images(folder)
    (patch,) = make_patches(images, PatchSpec(scale=2, patches=1, patch_size=16, seed=0))
    lr = imresize(modcrop(read_image(images.calibration[0]), 2), scale=0.5)
    windows = np.lib.stride_tricks.sliding_window_view(lr, patch.shape)
    assert (windows == patch).all(axis=(-3, -2, -1)).any()


def test_patch_cache_is_reused(tmp_path) -> None:
    spec = PatchSpec(scale=4, patches=6, patch_size=32, seed=0)
    first, _ = load_patches(spec, BUNDLED_SAMPLES, tmp_path)
    cached = list(tmp_path.glob("patches-x4-*.npz"))
    assert len(cached) == 1
    second, _ = load_patches(spec, BUNDLED_SAMPLES, tmp_path)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write left no temp file


def test_heldout_crops_match_hr(tmp_path) -> None:
    images = calibration_images(BUNDLED_SAMPLES)
    for sample in heldout_samples(images, scale=4, size=32):
        assert sample.lr.shape[0] % 16 == 0 and sample.lr.shape[1] % 16 == 0
        assert sample.hr.shape == (sample.lr.shape[0] * 4, sample.lr.shape[1] * 4, 3)


def test_hard_edge_crops_are_the_heldout_crops_in_saturated_colours() -> None:
    samples = heldout_samples(calibration_images(BUNDLED_SAMPLES), scale=4, size=32)
    crops = hard_edge_crops(samples)
    assert len(crops) == len(samples)
    for sample, crop in zip(samples, crops):
        assert crop.shape == sample.lr.shape and crop.dtype == np.uint8
        assert set(np.unique(crop)) <= {0, 255}
        np.testing.assert_array_equal(crop == 255, sample.lr >= 128)  # each channel cut at mid-grey


def test_empty_calibration_folder_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(DatasetError) as info:
        calibration_images(tmp_path)
    assert "holds no" in one_line(info.value)
    with pytest.raises(DatasetError) as info:
        calibration_images(tmp_path / "missing")
    assert "does not exist" in one_line(info.value)


def test_patch_size_must_be_a_multiple_of_16() -> None:
    with pytest.raises(ElanDeployError) as info:
        PatchSpec(patch_size=40)
    assert "multiple of 16" in one_line(info.value)


def test_t91_twins_do_not_leak_into_calibration(tmp_path) -> None:
    folder = tmp_path / "calib"
    folder.mkdir()
    pngs = sorted(BUNDLED_SAMPLES.glob("*.png"))[:5]
    for png in pngs:
        shutil.copy(png, folder)
    shutil.copy(pngs[-1], folder / "zz_twin.png")  # byte-identical to the held-out 5th image
    images = calibration_images(folder)
    assert folder / pngs[-1].name in images.heldout
    assert folder / "zz_twin.png" not in images.calibration


def test_bundled_readme_names_the_files() -> None:
    text = (BUNDLED_SAMPLES / "README.md").read_text()
    assert all(p.stem in text for p in BUNDLED_SAMPLES.glob("*.png"))


def test_resolve_refuses_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(DatasetError):
        resolve_calibration_dir(tmp_path / "nope")
