"""The test-set guard: benchmark images never become calibration data, by folder name or by content."""

from __future__ import annotations

import shutil

import pytest

from elan_deploy.calibration.data import BUNDLED_SAMPLES, PatchSpec, calibration_images, load_patches
from elan_deploy.calibration.guard import TestSetRefused, pixel_hash
from elan_deploy.imaging import read_image
from tests.helpers import one_line


@pytest.mark.parametrize("name", ["Set5", "set14", "B100", "Urban100", "BSD100"])
def test_guard_refuses_test_set_folders(tmp_path, name) -> None:
    folder = tmp_path / name / "HR"
    folder.mkdir(parents=True)
    shutil.copy(sorted(BUNDLED_SAMPLES.glob("*.png"))[0], folder)
    with pytest.raises(TestSetRefused) as info:
        calibration_images(folder)
    assert "test set" in one_line(info.value)


def test_guard_refuses_test_images_by_content(tmp_path, shared_data) -> None:
    """A Set5 image renamed into an innocent-looking folder is still recognised."""
    folder = tmp_path / "my_training_images"
    folder.mkdir()
    for png in sorted(BUNDLED_SAMPLES.glob("*.png"))[:4]:
        shutil.copy(png, folder)
    shutil.copy(shared_data / "Set5" / "HR" / "bird.png", folder / "t999.png")
    with pytest.raises(TestSetRefused) as info:
        load_patches(PatchSpec(patches=2, patch_size=16), folder, tmp_path / "cache")
    assert "Set5" in one_line(info.value)


def test_bundled_fingerprints_cover_the_benchmarks(shared_data) -> None:
    from elan_deploy.calibration.testset_hashes import KNOWN_TEST_IMAGES

    for name in ("Set5/HR/baby.png", "Set14/HR/img_003.png", "B100/HR/img_001.png"):
        path = shared_data / name
        if path.is_file():
            assert KNOWN_TEST_IMAGES.get(pixel_hash(read_image(path))) == name
