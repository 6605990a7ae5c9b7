"""Natural-image inputs for a diff, and their hand-over file in Polygraphy's format.

ELAN's attention has no 1/sqrt(d) scale, so uniform noise (Polygraphy's default data) drives
its logits to ~1e5 and makes every comparison meaningless; the diff feeds photographs instead.
Each image is resized (MATLAB-compatible bicubic) just enough to cover the engine shape and
centre-cropped to it, so the whole frame holds natural content at any `--shape`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from elan_deploy.errors import DatasetError
from elan_deploy.runtimes.base import Shape

def default_image_dir() -> Path:
    """The T91 samples bundled with the toolkit (training images, never a benchmark)."""
    from elan_deploy.calibration.data import BUNDLED_SAMPLES

    return BUNDLED_SAMPLES


def fit_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize an HxWx3 uint8 image to cover height x width, then centre-crop: HxWx3 float32 0..255."""
    from elan_deploy.imaging import imresize

    scale = max(height / image.shape[0], width / image.shape[1])
    if scale != 1.0:
        out_h = max(height, round(image.shape[0] * scale))
        out_w = max(width, round(image.shape[1] * scale))
        image = imresize(image, output_shape=(out_h, out_w))
    top = (image.shape[0] - height) // 2
    left = (image.shape[1] - width) // 2
    return np.ascontiguousarray(image[top : top + height, left : left + width], dtype=np.float32)


@dataclass
class DiffInputs:
    """The feed dicts of a diff (one per iteration) and the images they were made from."""

    feeds: list[OrderedDict]
    images: list[Path]
    folder: Path

    @property
    def input_name(self) -> str:
        return next(iter(self.feeds[0]))


def natural_inputs(shape: Shape, iterations: int, folder: Path | None = None, input_name: str = "lr") -> DiffInputs:
    """`iterations` batches of shape N,3,H,W, images taken in name order (cycled when too few)."""
    from elan_deploy.imaging import list_images, read_image

    folder = Path(folder) if folder is not None else default_image_dir()
    paths = list_images(folder)
    if not paths:
        raise DatasetError(f"image folder '{folder}' holds no PNG/JPEG/BMP/TIFF images; pass --images with photographs")
    batch, _, height, width = shape
    count = batch * iterations
    used = [paths[i % len(paths)] for i in range(count)]
    cache: dict[Path, np.ndarray] = {}
    feeds = []
    for start in range(0, count, batch):
        images = []
        for path in used[start : start + batch]:
            if path not in cache:
                cache[path] = fit_to(read_image(path), height, width).transpose(2, 0, 1)
            images.append(cache[path])
        feeds.append(OrderedDict([(input_name, np.ascontiguousarray(np.stack(images)))]))
    return DiffInputs(feeds, list(dict.fromkeys(used)), folder)


def save_inputs(feeds: list[OrderedDict], path: Path) -> None:
    """Write the feed dicts as Polygraphy's `--load-inputs` JSON (a list of name -> array), atomically."""
    from polygraphy.json import save_json

    from elan_deploy.fileio import atomic_path

    with atomic_path(path) as tmp:
        save_json(feeds, str(tmp), description="diff input data")
