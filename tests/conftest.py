"""Shared fixtures: the read-only benchmark data in ../shared and the bundled model.

Network-output tests use natural images only: ELAN's unscaled q·qᵀ attention blows uniform
noise up to ~1e5, which makes any numeric comparison meaningless.
"""

from __future__ import annotations

import re
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


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Engines and exports built by tests go to a throwaway cache, never the user's."""
    import os

    root = tmp_path_factory.mktemp("engine-cache")
    old = os.environ.get("ELAN_DEPLOY_CACHE")
    os.environ["ELAN_DEPLOY_CACHE"] = str(root / "engines")
    yield root
    if old is None:
        os.environ.pop("ELAN_DEPLOY_CACHE", None)
    else:
        os.environ["ELAN_DEPLOY_CACHE"] = old


@pytest.fixture(scope="session")
def exported_onnx(bundled, tmp_path_factory) -> Path:
    """The bundled model exported once as `elan-deploy export` writes it by default (range-guarded)."""
    from elan_deploy.calibration.ranges import calibrated_guard
    from elan_deploy.export import ExportConfig, export_onnx

    path = tmp_path_factory.mktemp("onnx") / "elan-light-x4.fp32.onnx"
    export_onnx(bundled, path, ExportConfig(), guard=calibrated_guard(bundled))
    return path


@pytest.fixture(scope="session")
def model_source(bundled, exported_onnx):
    from elan_deploy.runtimes import ModelSource

    return ModelSource(bundled, onnx=exported_onnx)


_PROGRESS_LINE = re.compile(r"^\[\d+:\d\d(:\d\d)?\] ")


def message_lines(err: str) -> list[str]:
    """The non-empty lines of a command's stderr, without the plain progress lines of a non-terminal."""
    return [line for line in err.splitlines() if line.strip() and not _PROGRESS_LINE.match(line)]
