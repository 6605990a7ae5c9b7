"""Keep the test sets out of calibration: by folder name and by image content.

INT8 ranges fitted on Set5/Set14/B100 and then scored on them would report a quality the
model does not have on unseen images. Two checks, both one-line `TestSetRefused` errors:

- folder name: any component of the calibration path named like a benchmark set
  (Set5, Set14, B100, BSD100, BSDS100, Urban100, Manga109; case-insensitive);
- content: the decoded pixels of every calibration image are hashed and compared with the
  test images bundled as fingerprints (`testset_hashes`) and with the test sets reachable
  under the data root (`$ELAN_DEPLOY_DATA`, `./data`, `../shared/data`), so a renamed or
  re-encoded copy of a test image is still caught.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from elan_deploy.datasets import DATA_ROOT_ENV, TEST_SETS, candidate_roots
from elan_deploy.errors import DatasetError
from elan_deploy.imaging import list_images, read_image

TEST_SET_NAMES: frozenset[str] = frozenset(name.lower() for name in TEST_SETS)


class TestSetRefused(DatasetError):
    """Calibration data is (or contains) an evaluation test set."""

    __test__ = False  # not a pytest test class, despite the name


def pixel_hash(image: np.ndarray) -> str:
    """First 16 hex digits of sha256 over an HxWx3 uint8 image's shape and pixels."""
    array = np.ascontiguousarray(image, dtype=np.uint8)
    return hashlib.sha256(np.asarray(array.shape, dtype=np.int64).tobytes() + array.tobytes()).hexdigest()[:16]


def refuse_test_set_folder(folder: Path) -> None:
    """Raise if any component of `folder` is named like a benchmark test set."""
    for part in Path(folder).resolve().parts:
        if part.lower() in TEST_SET_NAMES:
            raise TestSetRefused(
                f"calibration folder '{folder}' is the {part} test set; test sets are for evaluation only, "
                "calibrate on T91 (the default) or another training set"
            )


def _data_roots() -> list[Path]:
    roots = [Path(env)] if (env := os.environ.get(DATA_ROOT_ENV)) else []
    return [r for r in roots + candidate_roots() if r.is_dir()]


def _test_image_folders(root: Path) -> Iterable[tuple[str, Path]]:
    for name in TEST_SETS:
        folder = root / name
        if not folder.is_dir():
            continue
        for sub in [folder, folder / "HR", *sorted((folder / "LR_bicubic").glob("X*"))]:
            if sub.is_dir():
                yield f"{name}/{sub.relative_to(folder)}" if sub != folder else name, sub


@functools.lru_cache(maxsize=4)
def _reachable_hashes(roots: tuple[Path, ...]) -> dict[str, str]:
    found: dict[str, str] = {}
    for root in roots:
        for label, folder in _test_image_folders(root):
            for path in list_images(folder):
                try:
                    found.setdefault(pixel_hash(read_image(path)), f"{label}/{path.name}")
                except DatasetError:
                    continue
    return found


def known_test_hashes(scan_data_roots: bool = True) -> dict[str, str]:
    """Fingerprint -> test image name: the bundled table plus any test set reachable on disk."""
    from elan_deploy.calibration.testset_hashes import KNOWN_TEST_IMAGES

    known = dict(KNOWN_TEST_IMAGES)
    if scan_data_roots:
        for digest, name in _reachable_hashes(tuple(r.resolve() for r in _data_roots())).items():
            known.setdefault(digest, name)
    return known


def refuse_test_images(images: dict[Path, np.ndarray], scan_data_roots: bool = True) -> None:
    """Raise if any of the decoded calibration images is pixel-identical to a test image."""
    known = known_test_hashes(scan_data_roots)
    for path, image in images.items():
        if (name := known.get(pixel_hash(image))) is not None:
            raise TestSetRefused(
                f"calibration image '{path}' is the test image {name}; test sets are for evaluation only, "
                "calibrate on T91 (the default) or another training set"
            )


def _write_table(data_root: Path, out: Path) -> None:
    """Regenerate `testset_hashes.py` from a data root holding Set5/, Set14/, B100/."""
    rows = sorted(_reachable_hashes((data_root.resolve(),)).items(), key=lambda kv: kv[1])
    body = "\n".join(f'    "{digest}": "{name}",' for digest, name in rows)
    text = Path(__file__).with_name("testset_hashes.py").read_text().split("KNOWN_TEST_IMAGES")[0]
    out.write_text(f"{text}KNOWN_TEST_IMAGES: dict[str, str] = {{\n{body}\n}}\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="regenerate the bundled test-set fingerprints")
    parser.add_argument("--write-table", type=Path, required=True, metavar="DATA_ROOT")
    args = parser.parse_args()
    _write_table(args.write_table, Path(__file__).with_name("testset_hashes.py"))
