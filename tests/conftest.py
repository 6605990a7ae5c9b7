"""Shared fixtures: the read-only benchmark data in ../shared and the bundled model.

Network-output tests use natural images only: ELAN's unscaled q·qᵀ attention blows uniform
noise up to ~1e5, which makes any numeric comparison meaningless.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "Set5").is_dir():
        pytest.skip(f"benchmark data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def bundled():
    from elan_deploy.model import load_bundled

    return load_bundled()


def natural_crop(shared: Path, height: int, width: int, image: str = "Set5/HR/baby.png", top: int = 40, left: int = 60) -> np.ndarray:
    """A HxWx3 float32 0..255 crop of a real photograph."""
    array = np.asarray(Image.open(shared / image).convert("RGB"), dtype=np.float32)
    return np.ascontiguousarray(array[top : top + height, left : left + width])
