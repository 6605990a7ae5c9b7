"""Upscaler and `elan-deploy upscale`: sizes, tiling seams, image formats, output errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from elan_deploy.cli import main
from elan_deploy.imaging import read_image
from elan_deploy.runtimes import ShapeRange, open_engine
from elan_deploy.upscale import Upscaler, seams, tile_starts
from tests.conftest import natural_crop


@pytest.fixture(scope="module")
def ort_engine(model_source):
    return open_engine(model_source, "onnxruntime", "fp32", ShapeRange.parse("1x3x16x16:1x3x192x320:4x3x512x512"))


def test_tile_geometry_covers_every_pixel_once() -> None:
    for length in (16, 100, 256, 700, 1000):
        starts = tile_starts(length, 256, 64) if length > 256 else [0]
        spans = seams(starts, min(256, length), length)
        covered = np.zeros(length, int)
        for begin, end in spans:
            covered[begin:end] += 1
        assert (covered == 1).all()
        assert all(s % 16 == 0 for s in starts[:-1])


@pytest.mark.parametrize(("height", "width"), [(97, 131), (13, 9), (16, 16)])
def test_any_size_gives_scale_times_size(ort_engine, shared_data, height, width) -> None:
    image = natural_crop(shared_data, height, width, "B100/HR/img_010.png", top=20, left=30)
    assert Upscaler(ort_engine, 4)(image).shape == (4 * height, 4 * width, 3)


def test_tiled_matches_untiled(ort_engine, shared_data) -> None:
    image = natural_crop(shared_data, 200, 300, "B100/HR/img_001.png", top=0, left=0)
    untiled = np.round(Upscaler(ort_engine, 4, tile=None)(image)).clip(0, 255)
    tiled = np.round(Upscaler(ort_engine, 4, tile=128, overlap=64, batch=2)(image)).clip(0, 255)
    within_one = (np.abs(tiled - untiled) <= 1).mean()
    assert within_one >= 0.999, within_one


def test_static_engine_tiles_at_its_shape(model_source, shared_data) -> None:
    shapes = ShapeRange.parse("2x3x64x64")
    engine = open_engine(model_source, "onnxruntime", "fp32", shapes)
    image = natural_crop(shared_data, 70, 90)
    assert Upscaler(engine, 4, shapes=shapes)(image).shape == (280, 360, 3)


@pytest.mark.slow
def test_large_image_through_cli(tmp_path: Path, shared_data, exported_onnx) -> None:
    big = np.asarray(Image.open(shared_data / "B100" / "HR" / "img_001.png").convert("RGB").resize((1000, 700)))
    Image.fromarray(big).save(tmp_path / "big.png")
    assert main(["upscale", str(tmp_path / "big.png"), "-o", str(tmp_path / "out.png"), "--onnx", str(exported_onnx)]) == 0
    assert read_image(tmp_path / "out.png").shape == (2800, 4000, 3)


def test_cli_handles_odd_size_gray_rgba_and_16bit(tmp_path: Path, shared_data, exported_onnx) -> None:
    photo = np.asarray(Image.open(shared_data / "Set5" / "HR" / "bird.png").convert("RGB"))[:97, :131]
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(photo).save(inputs / "odd.png")
    Image.fromarray(photo).convert("L").save(inputs / "gray.png")
    Image.fromarray(photo).convert("RGBA").save(inputs / "rgba.png")
    Image.fromarray((photo[..., 1].astype(np.uint16) * 257)).save(inputs / "deep16.png")
    out = tmp_path / "out"
    assert main(["upscale", str(inputs), "-o", str(out), "--onnx", str(exported_onnx)]) == 0
    for name in ("odd", "gray", "rgba", "deep16"):
        assert read_image(out / f"{name}.png").shape == (388, 524, 3)


def test_unwritable_output_folder(tmp_path: Path, shared_data, capsys) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    code = main(["upscale", str(shared_data / "Set5" / "LR_bicubic" / "X4"), "-o", str(blocker / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and "output folder" in err[0]


def test_missing_input(tmp_path: Path, capsys) -> None:
    code = main(["upscale", str(tmp_path / "nope.png"), "-o", str(tmp_path / "o.png")])
    assert code != 0 and "does not exist" in capsys.readouterr().err
