"""Tests for elan_deploy.imaging: image I/O, MATLAB bicubic and colour conversions."""

from __future__ import annotations

import struct
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

from elan_deploy.batch.outputs import write_output
from elan_deploy.errors import DatasetError, ElanDeployError, ImageError
from elan_deploy.imaging import (
    DECODE_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    MAX_PIXELS_ENV,
    hwc_to_nchw,
    imresize,
    list_images,
    modcrop,
    nchw_to_hwc,
    read_image,
    read_image_info,
    rgb_to_y,
    rgb_to_ycbcr,
    to_uint8,
    ycbcr_to_rgb,
)
from tests.helpers import SET5, SET5_NAMES, SHARED_DATA, needs_set5

needs_set14 = pytest.mark.skipif(
    not (SHARED_DATA / "Set14" / "HR" / "img_003.png").is_file(),
    reason=f"Set14 img_003.png not found under {SHARED_DATA / 'Set14' / 'HR'}",
)


def _natural_rgb(size: int = 64) -> np.ndarray:
    """A natural-image crop (Set5 butterfly) so codec paths see realistic content."""
    path = SET5 / "HR" / "butterfly.png"
    if not path.is_file():
        pytest.skip(f"natural test image missing: {path}")
    return read_image(path)[:size, :size].copy()


def _assert_one_line_image_error(path: Path, fragment: str) -> None:
    """read_image must fail with a one-line ImageError mentioning `fragment`."""
    with pytest.raises(ImageError) as info:
        read_image(path)
    message = str(info.value)
    assert "\n" not in message
    assert fragment in message
    assert str(path) in message


# ------------------------------------------------------------------------------ bicubic


@needs_set5
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_imresize_matches_set5_bicubic_lr(scale: int) -> None:
    """Downscaling the HR images reproduces the published LR_bicubic images."""
    identical = 0
    total = 0
    worst = 0
    for name in SET5_NAMES:
        hr = read_image(SET5 / "HR" / f"{name}.png")
        height, width = hr.shape[:2]
        hr = hr[: height - height % scale, : width - width % scale]
        expected = read_image(SET5 / "LR_bicubic" / f"X{scale}" / f"{name}x{scale}.png")
        produced = imresize(hr, 1 / scale)
        assert produced.dtype == np.uint8
        assert produced.shape == expected.shape
        diff = np.abs(produced.astype(np.int16) - expected.astype(np.int16))
        identical += int((diff == 0).sum())
        total += diff.size
        worst = max(worst, int(diff.max()))
    assert identical / total >= 0.99, f"only {identical / total:.4%} identical at x{scale}"
    assert worst <= 2, f"max difference {worst} at x{scale}"


@needs_set5
def test_imresize_downscale_is_fast() -> None:
    """A 512x512x3 image downscaled x4 takes well under half a second."""
    image = read_image(SET5 / "HR" / "baby.png")
    assert image.shape == (512, 512, 3)
    best = min(_timed(lambda: imresize(image, 1 / 4)) for _ in range(3))
    assert best < 0.5


def _timed(action: object) -> float:
    """Seconds one call of `action` takes."""
    start = time.perf_counter()
    action()  # type: ignore[operator]
    return time.perf_counter() - start


def test_imresize_float_upscale_shape_and_dtype() -> None:
    """Float input stays float (float32 out) and the shape follows the scale."""
    image = _natural_rgb(32).astype(np.float32)
    up = imresize(image, 2)
    assert up.shape == (64, 64, 3)
    assert up.dtype == np.float32
    shaped = imresize(image, output_shape=(40, 50))
    assert shaped.shape == (40, 50, 3)
    gray = imresize(image[:, :, 0], 3)
    assert gray.shape == (96, 96)


def test_imresize_float_agrees_with_uint8_path() -> None:
    """Float computation differs from the per-pass-rounded uint8 path by rounding only."""
    image = _natural_rgb(64)
    from_float = to_uint8(imresize(image.astype(np.float64), 1 / 2))
    from_uint8 = imresize(image, 1 / 2)
    assert np.abs(from_float.astype(int) - from_uint8.astype(int)).max() <= 2


def test_imresize_rejects_ambiguous_arguments() -> None:
    """Exactly one of scale / output_shape must be given."""
    image = _natural_rgb(16)
    with pytest.raises(ValueError):
        imresize(image)
    with pytest.raises(ValueError):
        imresize(image, 2, output_shape=(32, 32))


# ------------------------------------------------------------------------------ reading


@needs_set14
def test_read_grayscale_is_replicated_to_rgb() -> None:
    """A grayscale PNG becomes HxWx3 with three identical channels."""
    path = SHARED_DATA / "Set14" / "HR" / "img_003.png"
    image = read_image(path)
    assert image.dtype == np.uint8
    assert image.ndim == 3 and image.shape[2] == 3
    assert np.array_equal(image[:, :, 0], image[:, :, 1])
    assert np.array_equal(image[:, :, 0], image[:, :, 2])
    with Image.open(path) as reference:
        assert np.array_equal(image[:, :, 0], np.asarray(reference.convert("L")))


def test_read_rgba_warns_and_drops_alpha(tmp_path: Path) -> None:
    """RGBA input warns about the ignored alpha channel and returns its RGB part."""
    rgb = _natural_rgb()
    alpha = np.full(rgb.shape[:2] + (1,), 128, dtype=np.uint8)
    path = tmp_path / "rgba.png"
    Image.fromarray(np.concatenate([rgb, alpha], axis=2)).save(path)
    with pytest.warns(UserWarning, match="alpha"):
        image = read_image(path)
    assert image.shape == rgb.shape
    assert np.array_equal(image, rgb)


def test_read_palette_with_transparency_warns(tmp_path: Path) -> None:
    """Palette images with a transparent entry also warn and come back as RGB."""
    rgb = _natural_rgb()
    palette = Image.fromarray(rgb).quantize(colors=64)
    path = tmp_path / "pal.png"
    palette.save(path, transparency=0)
    with pytest.warns(UserWarning, match="alpha"):
        image = read_image(path)
    assert image.shape == rgb.shape and image.dtype == np.uint8


def test_read_rgb_does_not_warn(tmp_path: Path) -> None:
    """Plain RGB files are read silently."""
    path = tmp_path / "plain.png"
    Image.fromarray(_natural_rgb()).save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_image(path)


def test_read_16bit_png_is_scaled(tmp_path: Path) -> None:
    """16-bit grayscale is scaled to 8 bits with rounding (v * 255 / 65535)."""
    gray = _natural_rgb()[:, :, 1].astype(np.uint16)
    wide = gray * 256 + gray  # natural 16-bit content spanning 0..65535
    wide[0, :4] = [0, 65535, 32767, 32768]
    path = tmp_path / "sixteen.png"
    sixteen = Image.fromarray(wide.astype("<u2"))
    assert sixteen.mode == "I;16"
    sixteen.save(path)
    with Image.open(path) as check:
        assert check.mode.startswith("I")
    image = read_image(path)
    expected = np.round(wide.astype(np.float64) * 255.0 / 65535.0).astype(np.uint8)
    assert image.dtype == np.uint8
    assert np.array_equal(image[:, :, 0], expected)
    assert np.array_equal(image[:, :, 2], expected)
    assert list(image[0, :4, 0]) == [0, 255, 127, 128]


def test_read_non_image_file(tmp_path: Path) -> None:
    """A text file is reported as not an image."""
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n", encoding="utf-8")
    _assert_one_line_image_error(path, "not a recognised image")


def test_read_empty_file(tmp_path: Path) -> None:
    """A zero-byte file is reported as empty."""
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    _assert_one_line_image_error(path, "empty")


def test_read_truncated_png(tmp_path: Path) -> None:
    """A PNG cut in half fails instead of returning a partially decoded image."""
    path = tmp_path / "cut.png"
    Image.fromarray(_natural_rgb(128)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _assert_one_line_image_error(path, "truncated or corrupt")


def test_read_missing_file(tmp_path: Path) -> None:
    """A missing path says so."""
    _assert_one_line_image_error(tmp_path / "nope.png", "not found")


def test_read_directory(tmp_path: Path) -> None:
    """A directory path says it is a directory."""
    folder = tmp_path / "folder.png"
    folder.mkdir()
    _assert_one_line_image_error(folder, "directory")


def _bomb_png(path: Path, width: int, height: int) -> Path:
    """A valid all-black 8-bit grayscale PNG written row block by row block: a 12000x12000 one
    is ~140 KB on disk (the RGB one of the report, 420 KB) and would decode to 144 MB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(6)
    rows = b"\x00" * (width + 1) * 500  # filter byte + pixels, 500 rows at a time
    blocks = [compressor.compress(rows) for _ in range(height // 500)]
    blocks.append(compressor.compress(b"\x00" * (width + 1) * (height % 500)) + compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(blocks)) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    return _bomb_png(tmp_path_factory.mktemp("bomb") / "bomb.png", 12000, 12000)


def test_decompression_bomb_is_refused_from_its_header(bomb: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow's warning zone (89.5 to 179 megapixels, where it only warns) is refused before
    decoding, in one line naming the limit and how to raise it; no warning is printed."""
    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)
    assert bomb.stat().st_size < 500_000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(bomb) as img:
            assert DECODE_MAX_PIXELS < img.width * img.height < 2 * DECODE_MAX_PIXELS
    for read in (read_image, read_image_info):
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # Pillow's DecompressionBombWarning would fail here
            with pytest.raises(ImageError) as info:
                read(bomb)
        message = str(info.value)
        assert "\n" not in message and "12000x12000" in message and "too large" in message
        assert "89.5-megapixel limit" in message and f"{MAX_PIXELS_ENV}=144000000" in message
        assert time.perf_counter() - start < 0.5 * _decode_seconds(bomb)


def _decode_seconds(path: Path) -> float:
    """How long decoding the file takes, for comparison: refusing it must not decode it."""
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as img:
            img.load()
    return time.perf_counter() - start


def test_pixel_limit_is_configurable(bomb: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MAX_PIXELS_ENV, "144000000")
    info = read_image_info(bomb)  # header only: allowed now, and still not decoded
    assert (info.width, info.height, info.grayscale) == (12000, 12000, True)
    path = tmp_path / "small.png"
    Image.fromarray(_natural_rgb(64)).save(path)
    with pytest.raises(ImageError, match="64x64 is too large"):
        read_image(path, max_pixels=4095)
    assert read_image(path, max_pixels=4096).shape == (64, 64, 3)
    monkeypatch.setenv(MAX_PIXELS_ENV, "4000")
    _assert_one_line_image_error(path, "0.0-megapixel limit")
    monkeypatch.setenv(MAX_PIXELS_ENV, "many")
    with pytest.raises(ElanDeployError, match=MAX_PIXELS_ENV):
        read_image(path)


def test_raised_limit_above_pillows_own_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow refuses past twice its threshold on its own; a limit raised past that is ours to
    enforce, so such a file opens (here Pillow's threshold is lowered to keep the file small)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    path = tmp_path / "wide.png"
    Image.fromarray(_natural_rgb(64)).save(path)
    with pytest.raises(ImageError, match="too large"):
        read_image(path, max_pixels=4095)
    assert read_image(path, max_pixels=5000).shape == (64, 64, 3)


# ------------------------------------------------------------------------------ orientation, grayscale


@pytest.mark.parametrize(("orientation", "turn"), [(3, 2), (6, -1), (8, 1)])
def test_exif_orientation_is_applied(tmp_path: Path, orientation: int, turn: int) -> None:
    """A JPEG whose EXIF says 'rotate' reads as it is displayed; its header size agrees."""
    stored = _natural_rgb(64)[:40]  # 64 wide, 40 high
    path = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(path, quality=95, exif=exif)
    with Image.open(path) as raw:
        as_stored = np.asarray(raw.convert("RGB"))
    image = read_image(path)
    assert np.array_equal(image, np.rot90(as_stored, k=turn))  # np.rot90: k=1 is counter-clockwise
    info = read_image_info(path)
    assert (info.height, info.width) == image.shape[:2] and info.orientation == orientation


def test_grayscale_files_are_told_apart(tmp_path: Path) -> None:
    """L, LA and 16-bit files are grayscale (HxW with keep_gray); RGB and palette files are not."""
    rgb = _natural_rgb(32)
    gray = np.asarray(Image.fromarray(rgb).convert("L"))
    files = {
        "l.png": Image.fromarray(gray),
        "la.png": Image.fromarray(gray).convert("LA"),
        "i16.png": Image.fromarray(gray.astype(np.uint16) * 257),
        "rgb.png": Image.fromarray(rgb),
        "p.png": Image.fromarray(rgb).quantize(colors=32),
    }
    for name, img in files.items():
        img.save(tmp_path / name)
    for name in ("l.png", "la.png", "i16.png"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # LA: alpha dropped
            kept = read_image(tmp_path / name, keep_gray=True)
            replicated = read_image(tmp_path / name)
        assert read_image_info(tmp_path / name).grayscale
        assert kept.shape == (32, 32) and np.array_equal(kept, gray)
        assert replicated.shape == (32, 32, 3) and all(np.array_equal(replicated[:, :, c], gray) for c in range(3))
    for name in ("rgb.png", "p.png"):
        assert not read_image_info(tmp_path / name).grayscale
        assert read_image(tmp_path / name, keep_gray=True).shape == (32, 32, 3)


# ------------------------------------------------------------------------------ writing


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif", ".TIFF"])
def test_write_read_round_trip_lossless(tmp_path: Path, suffix: str) -> None:
    """Lossless formats read back exactly what was written."""
    image = _natural_rgb()
    path = tmp_path / f"out{suffix}"
    write_output(path, image, None)
    assert np.array_equal(read_image(path), image)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


@pytest.mark.skipif(not features.check("webp"), reason="this Pillow has no WebP codec")
def test_write_read_webp(tmp_path: Path) -> None:
    """.webp is written as WebP (lossy, high quality) and read back."""
    image = _natural_rgb()
    path = tmp_path / "out.webp"
    write_output(path, image, None)
    with Image.open(path) as written:
        assert written.format == "WEBP"
    back = read_image(path)
    assert back.shape == image.shape
    assert np.abs(back.astype(float) - image.astype(float)).mean() < 4.0  # grey levels of 255
    assert ".webp" in IMAGE_EXTENSIONS


def test_write_gray_is_single_channel(tmp_path: Path) -> None:
    gray = _natural_rgb()[:, :, 1]
    write_output(tmp_path / "gray.png", gray, None)
    with Image.open(tmp_path / "gray.png") as written:
        assert written.mode == "L"
    assert np.array_equal(read_image(tmp_path / "gray.png", keep_gray=True), gray)


def test_write_jpeg_round_trip_is_close(tmp_path: Path) -> None:
    """JPEG is lossy but written at high quality."""
    image = _natural_rgb()
    path = tmp_path / "out.jpg"
    write_output(path, image, None)
    back = read_image(path)
    assert back.shape == image.shape
    assert np.abs(back.astype(float) - image.astype(float)).mean() < 4.0


def test_write_float_is_rounded_and_clipped(tmp_path: Path) -> None:
    """Float images are rounded and clipped to 0..255 (to_uint8) before encoding."""
    image = _natural_rgb().astype(np.float32)
    noisy = image + 0.4
    noisy[0, 0] = [-20.0, 300.0, 254.6]
    path = tmp_path / "float.png"
    write_output(path, to_uint8(noisy), None)
    back = read_image(path)
    expected = image.astype(np.uint8)
    expected[0, 0] = [0, 255, 255]
    assert np.array_equal(back, expected)


def test_write_to_missing_folder_leaves_nothing(tmp_path: Path) -> None:
    """A nonexistent output folder raises a one-line error naming it; nothing is created."""
    folder = tmp_path / "missing"
    with pytest.raises(ElanDeployError) as info:
        write_output(folder / "out.png", _natural_rgb(), None)
    message = str(info.value)
    assert "\n" not in message and str(folder) in message
    assert not folder.exists()
    assert list(tmp_path.iterdir()) == []


def test_write_unknown_extension(tmp_path: Path) -> None:
    """Unsupported output extensions are refused before anything is written."""
    with pytest.raises(ImageError, match=r"\.gif"):
        write_output(tmp_path / "out.gif", _natural_rgb(), None)
    assert list(tmp_path.iterdir()) == []


def test_write_failure_removes_temp_and_keeps_old(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If encoding fails midway the temp file is removed and the old target survives."""
    path = tmp_path / "out.png"
    original = _natural_rgb()
    write_output(path, original, None)

    def broken_save(self: Image.Image, fp: object, *args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(ImageError, match="disk full"):
        write_output(path, 255 - original, None)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]
    assert np.array_equal(read_image(path), original)


# ------------------------------------------------------------------------------ helpers


F64_EPS = float(np.finfo(np.float64).eps)


def _close(actual: np.ndarray, expected: np.ndarray | float, ops: int) -> None:
    """Equal up to `ops` float64 roundings at the values' magnitude (0..255 scale, so the
    bound holds whatever order the BLAS on this CPU sums in)."""
    scale = max(float(np.max(np.abs(expected))), 1.0)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=ops * F64_EPS * scale)


def test_rgb_to_y_white_and_black() -> None:
    """Studio-swing luma: white is 235, black is 16."""
    white = np.full((2, 2, 3), 255, dtype=np.uint8)
    black = np.zeros((2, 2, 3), dtype=np.float32)
    assert rgb_to_y(white).dtype == np.float64
    _close(rgb_to_y(white), 235.0, ops=8)
    _close(rgb_to_y(black), 16.0, ops=8)


def test_ycbcr_round_trip_and_y_agrees() -> None:
    """ycbcr_to_rgb inverts rgb_to_ycbcr, and its Y plane equals rgb_to_y."""
    image = _natural_rgb().astype(np.float64)
    ycc = rgb_to_ycbcr(image)
    _close(ycc[..., 0], rgb_to_y(image), ops=16)
    # forward and inverse 3x3 products plus offsets, and the inverse matrix's own rounding
    _close(ycbcr_to_rgb(ycc), image, ops=256)
    grey = rgb_to_ycbcr(np.full((1, 1, 3), 128.0))
    _close(grey[0, 0, 1:], np.array([128.0, 128.0]), ops=16)


def test_modcrop() -> None:
    """H and W are cut down to multiples of the scale."""
    image = np.zeros((13, 10, 3), dtype=np.uint8)
    assert modcrop(image, 4).shape == (12, 8, 3)
    assert modcrop(image[:, :, 0], 3).shape == (12, 9)


def test_layout_round_trip() -> None:
    """hwc_to_nchw / nchw_to_hwc are inverse and produce float32."""
    image = _natural_rgb(16)
    tensor = hwc_to_nchw(image)
    assert tensor.shape == (1, 3, 16, 16) and tensor.dtype == np.float32
    back = nchw_to_hwc(tensor)
    assert back.dtype == np.float32 and np.array_equal(back, image.astype(np.float32))
    assert np.array_equal(nchw_to_hwc(tensor[0]), back)


def test_to_uint8_rounds_and_clips() -> None:
    """to_uint8 rounds to nearest and saturates."""
    values = np.array([-3.0, 0.4, 0.6, 254.6, 900.0])
    assert list(to_uint8(values)) == [0, 0, 1, 255, 255]


def test_list_images(tmp_path: Path) -> None:
    """Only image files directly in the folder, sorted, any extension case, no hidden files."""
    for name in ("b.PNG", "a.jpg", "c.tiff", ".hidden.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG", "c.tiff"]
    assert ".png" in IMAGE_EXTENSIONS
    with pytest.raises(DatasetError):
        list_images(tmp_path / "missing")
