"""SR benchmark datasets: HR folders, optional shipped LR, and the standard LR protocol.

A dataset is a folder of HR images, optionally with MATLAB-made LR beside it
(`LR_bicubic/X{s}/{stem}x{s}.png`, as Set5 ships). Without shipped LR, LR is made from the HR
cropped to a multiple of the scale with MATLAB-compatible bicubic — the protocol every SR
paper's numbers use. Test sets are read in place, never copied into the project.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from elan_deploy.errors import DatasetError
from elan_deploy.imaging import imresize, list_images, modcrop, read_image

DATA_ROOT_ENV = "ELAN_DEPLOY_DATA"
BENCHMARK_SETS = ("Set5", "Set14", "B100")
TEST_SETS = BENCHMARK_SETS + ("Urban100", "Manga109", "BSD100", "BSDS100")


def candidate_roots() -> list[Path]:
    here = Path(__file__).resolve()
    return [Path.cwd() / "data", Path.cwd().parent / "shared" / "data", here.parents[2] / "shared" / "data"]


def resolve_data_root(data_root: Path | str | None = None) -> Path:
    """`--data-root`, else $ELAN_DEPLOY_DATA, else `./data` or a `shared/data` beside the checkout."""
    if data_root is not None:
        root = Path(data_root)
        if not root.is_dir():
            raise DatasetError(f"data root '{root}' is not a folder; pass --data-root DIR holding Set5/, Set14/, B100/")
        return root
    if env := os.environ.get(DATA_ROOT_ENV):
        root = Path(env)
        if not root.is_dir():
            raise DatasetError(f"${DATA_ROOT_ENV}='{env}' is not a folder; point it at the folder holding Set5/, Set14/, B100/")
        return root
    for root in candidate_roots():
        if (root / "Set5").is_dir():
            return root
    raise DatasetError(f"no data root found; pass --data-root DIR or set ${DATA_ROOT_ENV} to the folder holding Set5/, Set14/, B100/")


@dataclass(frozen=True)
class Sample:
    name: str
    lr: np.ndarray  # HxWx3 uint8
    hr: np.ndarray  # sHxsWx3 uint8, cropped to a multiple of the scale


@dataclass(frozen=True)
class SRDataset:
    """HR images plus (optionally) the shipped LR for one scale."""

    name: str
    hr_dir: Path
    scale: int
    lr_dir: Path | None = None

    def hr_paths(self) -> list[Path]:
        return list_images(self.hr_dir)

    def __len__(self) -> int:
        return len(self.hr_paths())

    def _shipped_lr(self, hr_path: Path) -> Path | None:
        if self.lr_dir is None:
            return None
        for candidate in (f"{hr_path.stem}x{self.scale}{hr_path.suffix}", hr_path.name):
            if (self.lr_dir / candidate).is_file():
                return self.lr_dir / candidate
        return None

    def __iter__(self) -> Iterator[Sample]:
        for hr_path in self.hr_paths():
            hr = modcrop(read_image(hr_path), self.scale)
            lr_path = self._shipped_lr(hr_path)
            lr = read_image(lr_path) if lr_path else imresize(hr, scale=1 / self.scale)
            expected = (hr.shape[0] // self.scale, hr.shape[1] // self.scale)
            if lr.shape[:2] != expected:
                raise DatasetError(
                    f"LR '{lr_path}' is {lr.shape[1]}x{lr.shape[0]} but HR/{self.scale} is {expected[1]}x{expected[0]}; wrong scale folder?"
                )
            yield Sample(hr_path.stem, lr, hr)


def load_dataset(name_or_path: str, scale: int, data_root: Path | str | None = None) -> SRDataset:
    """Resolve `Set5`/`Set14`/`B100` under the data root, or a folder (with `HR/` or of HR images)."""
    path = Path(name_or_path)
    if name_or_path in BENCHMARK_SETS and not path.exists():
        folder = resolve_data_root(data_root) / name_or_path
        name = name_or_path
    else:
        folder = path
        name = path.name
    if not folder.is_dir():
        raise DatasetError(f"dataset folder '{folder}' does not exist; pass Set5, Set14, B100 or a folder of HR images")
    hr_dir = folder / "HR" if (folder / "HR").is_dir() else folder
    lr_dir = folder / "LR_bicubic" / f"X{scale}"
    dataset = SRDataset(name=name, hr_dir=hr_dir, scale=scale, lr_dir=lr_dir if lr_dir.is_dir() else None)
    if len(dataset) == 0:
        raise DatasetError(f"dataset folder '{hr_dir}' holds no PNG/JPEG/BMP/TIFF images; pass a folder of HR images")
    return dataset
