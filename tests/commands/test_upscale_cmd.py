"""`elan-deploy upscale` never replaces inputs or files it did not write, and checks its flags first;
odd sizes, grayscale, RGBA, 16-bit and EXIF-rotated images come out as displayed, output errors are one line.

Reproductions of issue 11 item 2 (same file, same folder, colliding stems) and item 6 (--batch 0/-1),
issue 12 item 10 (an output named like a file is a file, never a folder) and the missing-extra errors.
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from elan_deploy.cli import main
from elan_deploy.imaging import read_image
from tests.helpers import make_mixed_folder, message_lines, photo_crop, snapshot


@pytest.fixture()
def photos(tmp_path: Path, shared_data) -> Path:
    folder = tmp_path / "photos"
    make_mixed_folder(folder, shared_data, corrupt=0, sizes=[(20, 24), (24, 28)])
    return folder


def _err_lines(capsys) -> list[str]:
    return message_lines(capsys.readouterr().err)


def test_output_that_is_the_input_file_is_refused(photos: Path, capsys) -> None:
    before = snapshot(photos)
    image = photos / "img00.png"
    assert main(["upscale", str(image), "-o", str(image)]) == 2
    assert snapshot(photos) == before
    assert "is the input itself" in _err_lines(capsys)[-1]


def test_hard_link_to_an_input_is_refused(photos: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "img00.png").hardlink_to(photos / "img00.png")
    before = snapshot(photos)
    assert main(["upscale", str(photos), "-o", str(out)]) == 2
    assert snapshot(photos) == before
    assert "is the input itself" in _err_lines(capsys)[-1]


@pytest.mark.parametrize("spelling", ["same", "dot", "symlink"])
def test_output_folder_that_is_the_input_folder_is_refused(photos: Path, tmp_path: Path, spelling: str, capsys) -> None:
    target = {"same": photos, "dot": photos / ".", "symlink": tmp_path / "link"}[spelling]
    if spelling == "symlink":
        target.symlink_to(photos)
    before = snapshot(photos)
    assert main(["upscale", str(photos), "-o", str(target)]) == 2
    assert snapshot(photos) == before, "inputs changed or outputs landed among them"
    assert "is the input folder" in _err_lines(capsys)[-1]


def test_colliding_stems_get_distinct_outputs(tmp_path: Path, shared_data, exported_onnx) -> None:
    inputs = tmp_path / "in"
    make_mixed_folder(inputs, shared_data, corrupt=0, sizes=[(20, 24)])
    Image.open(inputs / "img00.png").save(inputs / "img00.jpg", quality=95)
    before = snapshot(inputs)
    out = tmp_path / "out"
    assert main(["upscale", str(inputs), "-o", str(out), "--onnx", str(exported_onnx)]) == 0
    assert snapshot(inputs) == before
    assert sorted(p.name for p in out.iterdir()) == ["img00.jpg.png", "img00.png.png"]
    from_png, from_jpg = read_image(out / "img00.png.png"), read_image(out / "img00.jpg.png")
    assert from_png.shape == from_jpg.shape == (80, 96, 3)
    assert not np.array_equal(from_png, from_jpg), "one input's output was written twice"


def test_existing_file_the_tool_did_not_write_is_kept(photos: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "img01.png").write_bytes(b"my own notes, not an upscale")
    assert main(["upscale", str(photos), "-o", str(out)]) == 2
    assert (out / "img01.png").read_bytes() == b"my own notes, not an upscale"
    assert sorted(p.name for p in out.iterdir()) == ["img01.png"], "something was written before the refusal"
    assert "did not write" in _err_lines(capsys)[-1]


def test_overwrite_flag_replaces_the_named_file(photos: Path, tmp_path: Path, exported_onnx) -> None:
    target = tmp_path / "copy.png"
    target.write_bytes((photos / "img00.png").read_bytes())
    assert main(["upscale", str(target), "-o", str(target), "--overwrite", "--onnx", str(exported_onnx)]) == 0
    assert read_image(target).shape == (80, 96, 3)


@pytest.mark.parametrize("batch", ["0", "-1"])
def test_batch_below_one_is_a_usage_error(photos: Path, tmp_path: Path, batch: str, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["upscale", str(photos / "img00.png"), "-o", str(tmp_path / "o.png"), f"--batch={batch}"])
    assert stop.value.code == 2
    assert "--batch" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_extension_names_the_written_format(photos: Path, tmp_path: Path, exported_onnx) -> None:
    for name, fmt in (("out.webp", "WEBP"), ("out.jpg", "JPEG"), ("out.bmp", "BMP")):
        assert main(["upscale", str(photos / "img00.png"), "-o", str(tmp_path / name), "--onnx", str(exported_onnx)]) == 0
        with Image.open(tmp_path / name) as img:
            assert (img.format, img.size) == (fmt, (96, 80))


@pytest.mark.parametrize("name", ["out.txt", "out.json"])
def test_unknown_extension_is_a_one_line_error_and_creates_nothing(photos: Path, tmp_path: Path, name: str, capsys) -> None:
    assert main(["upscale", str(photos / "img00.png"), "-o", str(tmp_path / name)]) == 2
    err = _err_lines(capsys)
    assert len(err) == 1 and "is not a format for images" in err[0]
    assert not (tmp_path / name).exists()


def test_folder_input_never_creates_a_folder_named_like_a_file(photos: Path, tmp_path: Path, capsys) -> None:
    assert main(["upscale", str(photos), "-o", str(tmp_path / "out.webp")]) == 2
    assert not (tmp_path / "out.webp").exists()
    assert "must be a folder" in _err_lines(capsys)[-1]


def test_flags_that_do_not_fit_the_input_are_refused(photos: Path, tmp_path: Path, capsys) -> None:
    image = str(photos / "img00.png")
    assert main(["upscale", image, "-o", str(tmp_path / "o.png"), "--crf", "20"]) == 2
    assert "video inputs only" in _err_lines(capsys)[-1]
    assert main(["upscale", str(photos), "-o", str(tmp_path / "o"), "--actors", "2"]) == 2
    assert "need --ray" in _err_lines(capsys)[-1]
    assert main(["upscale", image, "-o", str(tmp_path / "o.png"), "--tile", "40"]) == 2
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.png").exists()


def test_missing_ray_extra_names_the_pip_command(photos: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    assert main(["upscale", str(photos), "-o", str(tmp_path / "o"), "--ray"]) == 2
    err = _err_lines(capsys)
    assert len(err) == 1 and "pip install 'elan-deploy[ray]'" in err[0]
    assert not (tmp_path / "o").exists()


def test_missing_video_extra_names_the_pip_command(tmp_path: Path, monkeypatch, capsys) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00" * 64)
    monkeypatch.setitem(sys.modules, "av", None)
    assert main(["upscale", str(clip), "-o", str(tmp_path / "clip_x4.mp4")]) == 2
    err = _err_lines(capsys)
    assert len(err) == 1 and "pip install 'elan-deploy[video]'" in err[0]


@pytest.mark.slow  # builds an OpenVINO fp16 engine (~30 s on 2 cores)
def test_precision_that_ran_differs_from_the_one_asked(tmp_path: Path, photos: Path, model_source, exported_onnx, capsys) -> None:
    """OpenVINO on a CPU without native fp16 runs fp32 when fp16 is asked; upscale says so in one line."""
    from elan_deploy.runtimes import EngineLoader, ShapeRange, is_available

    if is_available("openvino") is not None:
        pytest.skip("OpenVINO is not installed")
    shapes = "1x3x32x32"
    used = EngineLoader(model_source, "openvino", "fp16", ShapeRange.parse(shapes)).open().info.precision_used
    code = main(["upscale", str(photos / "img00.png"), "-o", str(tmp_path / "o.png"), "--runtime", "openvino",
                 "--precision", "fp16", "--onnx", str(exported_onnx), "--shapes", shapes])
    assert code == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: asked for fp16")]
    if used == "fp16":
        assert not warned, "warned although fp16 ran"
    else:
        assert warned == [f"warning: asked for fp16, openvino runs {used} on this machine"]


@pytest.mark.parametrize("runtime,flags,expected", [
    ("openvino", "avx2 avx512f avx512_vnni avx512_bf16", "bf16"),  # Zen 4/5: bf16 in hardware
    ("openvino", "avx2 fma", "fp32"),  # Zen 3: OpenVINO would run f32 anyway
    ("torch", "avx2 fma", "fp32"),  # bf16 would be emulated
    ("onnxruntime", "avx2 avx512f avx512_bf16 amx_bf16", "fp32"),  # its fp16/int8 CPU kernels are slower
])
def test_upscale_defaults_to_the_runtimes_fastest_native_precision(runtime: str, flags: str, expected: str, monkeypatch) -> None:
    from elan_deploy.cli import build_parser
    from elan_deploy.commands.common import resolve_auto_precision
    from elan_deploy.cpu import FLAGS_ENV

    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("precision support is judged by x86 flags")
    monkeypatch.setenv(FLAGS_ENV, flags)
    args = build_parser().parse_args(["upscale", "in.png", "-o", "out.png", "--runtime", runtime])
    assert args.precision == "auto"
    resolve_auto_precision(args)
    assert args.precision == expected
    named = build_parser().parse_args(["upscale", "in.png", "-o", "out.png", "--runtime", runtime, "--precision", "fp32"])
    resolve_auto_precision(named)
    assert named.precision == "fp32"  # a precision asked for by name is kept


@pytest.mark.parametrize("name", ["out.jpg", "out.webp", "out.bmp", "out.tif"])
def test_rerun_skips_a_complete_output_of_any_image_format(name: str, photos: Path, tmp_path: Path, exported_onnx, capsys) -> None:
    out = tmp_path / name
    argv = ["upscale", str(photos / "img00.png"), "-o", str(out), "--onnx", str(exported_onnx)]
    assert main(argv) == 0
    written = snapshot(tmp_path)
    capsys.readouterr()
    assert main(argv) == 0, _err_lines(capsys)
    assert "1 image(s): 0 done, 1 skipped" in capsys.readouterr().err
    assert snapshot(tmp_path) == written


def _nested_inputs(photos: Path) -> dict[str, str]:
    """photos/ gains a subfolder tree and a text file; returns input -> expected output (relative)."""
    (photos / "sub" / "deeper").mkdir(parents=True)
    (photos / "img00.png").rename(photos / "sub" / "img00.png")
    Image.open(photos / "img01.png").save(photos / "sub" / "deeper" / "x.png")
    Image.open(photos / "img01.png").save(photos / "sub" / "deeper" / "x.jpg", quality=95)
    (photos / "notes.txt").write_text("not an image")
    return {"img01.png": "img01.png", "sub/img00.png": "sub/img00.png",
            "sub/deeper/x.png": "sub/deeper/x.png.png", "sub/deeper/x.jpg": "sub/deeper/x.jpg.png"}


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_folder_summary_counts_subfolders_and_other_files_it_skipped(photos: Path, tmp_path: Path, exported_onnx, capsys) -> None:
    _nested_inputs(photos)
    out = tmp_path / "out"
    assert main(["upscale", str(photos), "-o", str(out), "--onnx", str(exported_onnx)]) == 0
    err = _err_lines(capsys)
    assert "1 subfolder and 1 non-image file skipped; --recursive includes subfolders" in err
    assert _tree(out) == ["img01.png"]


def test_recursive_mirrors_the_layout_and_never_reads_its_output_folder(photos: Path, exported_onnx, capsys) -> None:
    expected = _nested_inputs(photos)
    out = photos / "sub" / "x4"  # inside the input tree
    inputs_before = {name: (photos / name).read_bytes() for name in _tree(photos)}
    argv = ["upscale", str(photos), "-o", str(out), "--recursive", "--onnx", str(exported_onnx)]
    assert main(argv) == 0
    err = _err_lines(capsys)
    assert f"{len(expected)} image(s): {len(expected)} done" in err[-1] and "1 non-image file skipped" in err
    assert _tree(out) == sorted(expected.values())
    for source, output in expected.items():
        lr = read_image(photos / source)
        assert read_image(out / output).shape == (4 * lr.shape[0], 4 * lr.shape[1], 3)
    written = {name: (out / name).read_bytes() for name in _tree(out)}
    assert main(argv) == 0  # a rerun skips every output and reads none of them as input
    assert f"{len(expected)} image(s): 0 done, {len(expected)} skipped" in _err_lines(capsys)[-1]
    assert {name: (out / name).read_bytes() for name in _tree(out)} == written
    assert {name: (photos / name).read_bytes() for name in _tree(photos) if not name.startswith("sub/x4/")} == inputs_before


def test_folder_without_images_at_the_top_suggests_recursive(tmp_path: Path, photos: Path, capsys) -> None:
    top = tmp_path / "top"
    (top / "inner").mkdir(parents=True)
    (photos / "img00.png").rename(top / "inner" / "img00.png")
    assert main(["upscale", str(top), "-o", str(tmp_path / "out")]) == 2
    assert "pass --recursive" in _err_lines(capsys)[-1]
    assert main(["upscale", str(top / "inner" / "img00.png"), "-o", str(tmp_path / "o.png"), "--recursive"]) == 2
    assert "--recursive reads folders" in _err_lines(capsys)[-1]
    assert not (tmp_path / "out").exists() and not (tmp_path / "o.png").exists()


# --- images of any kind through the command ------------------------------------------------------


def test_exif_rotated_jpeg_comes_out_as_displayed(tmp_path: Path, shared_data, exported_onnx) -> None:
    stored = photo_crop(shared_data, 24, 40)  # 40 wide, 24 high as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed turned 90 degrees clockwise: 24 wide, 40 high
    Image.fromarray(stored).save(tmp_path / "turned.jpg", quality=95, exif=exif)
    assert main(["upscale", str(tmp_path / "turned.jpg"), "-o", str(tmp_path / "out.png"), "--onnx", str(exported_onnx)]) == 0
    assert read_image(tmp_path / "out.png").shape == (160, 96, 3)


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
