"""The images a load test sends: every picture of a folder, centre-cropped to one size.

One size keeps every request the same work, so that the levels of a load test differ only in
concurrency; `full` sends the pictures as they are, for a test of mixed sizes.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from elan_deploy.errors import ElanDeployError

DEFAULT_SIZE = "64x64"


def parse_size(text: str) -> tuple[int, int] | None:
    """`HxW` for a centre crop of every request image, or None for `full` (the images as they are)."""
    if text == "full":
        return None
    m = re.fullmatch(r"(\d+)x(\d+)", text)
    if not m or 0 in (int(m.group(1)), int(m.group(2))):
        raise ElanDeployError(f"--size must be HxW with positive H and W (e.g. 64x64) or 'full', got '{text}'")
    return int(m.group(1)), int(m.group(2))


def load_request_images(folder: Path | None, size: tuple[int, int] | None) -> tuple[list[np.ndarray], str]:
    """HxWx3 uint8 images for the requests (centre crops of `size`), and the dataset label for the results."""
    from elan_deploy.imaging import list_images, read_image

    if folder is None:
        from elan_deploy.calibration.data import BUNDLED_SAMPLES

        folder, label = BUNDLED_SAMPLES, "bundled-samples"
    else:
        if not folder.is_dir():
            raise ElanDeployError(f"--images '{folder}' is not a folder of images")
        label = folder.name
    images = []
    for path in list_images(folder):
        image = read_image(path)
        if size is not None:
            h, w = size
            if image.shape[0] < h or image.shape[1] < w:
                continue
            top, left = (image.shape[0] - h) // 2, (image.shape[1] - w) // 2
            image = np.ascontiguousarray(image[top : top + h, left : left + w])
        images.append(image)
    if not images:
        raise ElanDeployError(f"no image in '{folder}' is at least {size} pixels; pass --size smaller or 'full'")
    return images, label

