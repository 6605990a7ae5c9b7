"""Reference ELAN checkpoints: the bundled weights, both layouts, safety and mismatch errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from elan_deploy.errors import CheckpointError
from elan_deploy.model import ELAN, get_config, load_checkpoint
from elan_deploy.model.checkpoint import BUNDLED_SHA256, BUNDLED_WEIGHTS, file_sha256, frl_to_official, read_state_dict
from tests.helpers import natural_crop


def to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None]


def test_bundled_weights_are_intact(bundled) -> None:
    assert file_sha256(BUNDLED_WEIGHTS) == BUNDLED_SHA256 == bundled.sha256
    assert bundled.layout == "frl" and bundled.config.model_id == "elan-light-x4"


def test_bundled_model_upscales_a_photo_sensibly(bundled, shared_data: Path) -> None:
    lr = natural_crop(shared_data, 37, 45, "Set5/LR_bicubic/X4/birdx4.png", top=10, left=10)
    with torch.inference_mode():
        sr = bundled.model(to_tensor(lr))
    assert sr.shape == (1, 3, 148, 180)
    # Down-sampling the SR output again must land close to the LR input.
    down = torch.nn.functional.avg_pool2d(sr, 4)[0].permute(1, 2, 0).numpy()
    assert np.abs(down - lr).mean() < 6.0


def test_official_layout_round_trip(bundled, tmp_path: Path, shared_data: Path) -> None:
    official = tmp_path / "official.pth"
    torch.save({"state_dict": bundled.model.state_dict()}, official)
    loaded = load_checkpoint(official, scale=4)
    assert loaded.layout == "official" and loaded.config == bundled.config
    x = to_tensor(natural_crop(shared_data, 20, 28))
    with torch.inference_mode():
        assert torch.equal(loaded.model(x), bundled.model(x))


def test_frl_mapping_covers_every_tensor() -> None:
    frl = read_state_dict(BUNDLED_WEIGHTS)
    mapped = frl_to_official(frl)
    assert len(frl) == len(mapped) == 368
    assert set(mapped) == set(ELAN(get_config("elan-light", 4)).state_dict())


def test_full_elan_round_trips(tmp_path: Path, shared_data: Path) -> None:
    torch.manual_seed(0)
    model = ELAN(get_config("elan", 2)).eval()
    path = tmp_path / "elan_x2.pth"
    torch.save(model.state_dict(), path)
    loaded = load_checkpoint(path)
    assert loaded.config.name == "elan" and loaded.config.scale == 2
    x = to_tensor(natural_crop(shared_data, 16, 16)) / 255.0  # untrained weights: keep activations small
    with torch.inference_mode():
        assert torch.equal(loaded.model(x), model(x))


class _RunsCode:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickle_that_runs_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"params": _RunsCode()}, f)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(path)


def test_other_architecture_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "edsr.pth"
    torch.save({"conv_first.weight": torch.zeros(64, 3, 3, 3), "conv_last.weight": torch.zeros(3, 64, 3, 3)}, path)
    with pytest.raises(CheckpointError, match="not an ELAN checkpoint"):
        load_checkpoint(path)


def test_scale_mismatch_names_both_scales() -> None:
    with pytest.raises(CheckpointError, match=r"x4 but x2"):
        load_checkpoint(BUNDLED_WEIGHTS, scale=2)


def test_architecture_mismatch_names_expected_and_found() -> None:
    with pytest.raises(CheckpointError, match="expected elan"):
        load_checkpoint(BUNDLED_WEIGHTS, expected=get_config("elan", 4))


def test_corrupt_and_missing_checkpoints(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pth"
    bad.write_bytes(BUNDLED_WEIGHTS.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pth")
