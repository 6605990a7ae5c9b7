"""Image I/O, MATLAB-compatible bicubic resizing and colour conversions.

Inside the toolkit images are RGB float32 HxWx3 arrays on the 0..255 scale; uint8 only at
the edges (files on disk). The SR literature builds its low-resolution inputs and its Y-channel
metrics with MATLAB's `imresize` and `rgb2ycbcr`, so both are reproduced here exactly: a
different resize kernel or colour matrix would shift reported PSNR by tenths of a dB.

Reading gives the picture the user sees: the EXIF orientation is applied, and a file larger
than the pixel limit (`pixel_limit`: Pillow's decompression-bomb threshold unless
$ELAN_DEPLOY_MAX_PIXELS or `max_pixels` says otherwise) is refused from its header, before a
byte of it is decoded. Grayscale files can be kept single-channel (`keep_gray`), so that the
Upscaler writes grayscale for grayscale.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError, features

from elan_deploy.fileio import atomic_path
from elan_deploy.errors import DatasetError, ElanDeployError, ImageError, NonFiniteOutput

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS_ENV",
    "ImageInfo",
    "hwc_to_nchw",
    "imresize",
    "list_images",
    "modcrop",
    "nchw_to_hwc",
    "pixel_limit",
    "read_image",
    "read_image_info",
    "rgb_to_y",
    "rgb_to_ycbcr",
    "check_finite",
    "to_uint8",
    "write_image",
    "ycbcr_to_rgb",
]

_WEBP = features.check("webp")  # Pillow wheels ship libwebp; a source build may not
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff") + ((".webp",) if _WEBP else ())

# Pillow format names we decode/encode; anything else is refused so that only well-known,
# widely used decoders ever see user files.
_READ_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "BMP", "TIFF") + (("WEBP",) if _WEBP else ())
_WRITE_FORMATS: dict[str, str] = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    **({".webp": "WEBP"} if _WEBP else {}),
}
_SAVE_OPTIONS: dict[str, dict[str, object]] = {"JPEG": {"quality": 95}, "WEBP": {"quality": 95}}
_READ_HINT = "pass a PNG, JPEG, BMP, TIFF" + (" or WebP file" if _WEBP else " file")
# Decompression-bomb guard: images over this many pixels are refused from their header, before
# any pixel is decoded. Pillow's own threshold (it only warns up to twice this); a 12000x12000
# PNG of 420 KB would otherwise decode to 432 MB and upscale x4 into a 25.7 GiB float array.
DEFAULT_MAX_PIXELS = 89_478_485
MAX_PIXELS_ENV = "ELAN_DEPLOY_MAX_PIXELS"
_ALPHA_MODES: frozenset[str] = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_SIXTEEN_BIT_MODES: frozenset[str] = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
# Single-channel modes (with or without alpha): the image is grayscale, whatever its values.
_GRAY_MODES: frozenset[str] = frozenset({"1", "L", "LA", "La"}) | _SIXTEEN_BIT_MODES
# EXIF orientations that turn the stored image by 90 degrees (displayed width = stored height).
_SWAPPED_ORIENTATIONS: frozenset[int] = frozenset({5, 6, 7, 8})

# MATLAB rgb2ycbcr (ITU-R BT.601, "studio swing" 16..235 / 16..240) on the 0..255 scale.
_YCBCR_MATRIX: np.ndarray = np.array(
    [
        [65.481, 128.553, 24.966],
        [-37.797, -74.203, 112.0],
        [112.0, -93.786, -18.214],
    ],
    dtype=np.float64,
) / 255.0
_YCBCR_OFFSET: np.ndarray = np.array([16.0, 128.0, 128.0], dtype=np.float64)
_YCBCR_INVERSE: np.ndarray = np.linalg.inv(_YCBCR_MATRIX)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def _one_line(text: object) -> str:
    """Collapse a (possibly multi-line) library message so our errors stay one line."""
    return " ".join(str(text).split())


def _check_readable_path(path: Path) -> None:
    """Fail early with a precise message for the common path mistakes."""
    if not path.exists():
        raise ImageError(f"cannot read image '{path}': file not found; check the path")
    if path.is_dir():
        raise ImageError(f"cannot read image '{path}': it is a directory; {_READ_HINT}")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageError(f"cannot read image '{path}': {_one_line(exc)}; {_READ_HINT}") from exc
    if size == 0:
        raise ImageError(f"cannot read image '{path}': file is empty; {_READ_HINT}")


def pixel_limit(max_pixels: int | None = None) -> int:
    """The decompression-bomb limit: `max_pixels` if given, else $ELAN_DEPLOY_MAX_PIXELS, else
    DEFAULT_MAX_PIXELS (Pillow's own threshold)."""
    if max_pixels is not None:
        value, origin = max_pixels, "max_pixels"
    elif os.environ.get(MAX_PIXELS_ENV, "").strip():
        text = os.environ[MAX_PIXELS_ENV].strip()
        try:
            value, origin = int(text.replace("_", "")), MAX_PIXELS_ENV
        except ValueError:
            raise ElanDeployError(
                f"{MAX_PIXELS_ENV}='{text}' is not a whole number of pixels; e.g. {DEFAULT_MAX_PIXELS}"
            ) from None
    else:
        return DEFAULT_MAX_PIXELS
    if value < 1:
        raise ElanDeployError(f"{origin}={value} must be a positive number of pixels; e.g. {DEFAULT_MAX_PIXELS}")
    return value


def _check_pixels(path: Path, size: tuple[int, int], limit: int) -> None:
    width, height = size
    if width * height > limit:
        raise ImageError(
            f"cannot read image '{path}': {width}x{height} is too large ({width * height / 1e6:.1f} megapixels, over the "
            f"{limit / 1e6:.1f}-megapixel limit that guards against decompression bombs); if you trust the file, "
            f"set {MAX_PIXELS_ENV}={width * height}"
        )


@contextlib.contextmanager
def _opened(path: Path, max_pixels: int | None) -> Iterator[Image.Image]:
    """Open a file (header only) with its size checked against the pixel limit, turning every
    Pillow failure, in here or in the caller's body (decoding), into a one-line ImageError."""
    limit = pixel_limit(max_pixels)
    if Image.MAX_IMAGE_PIXELS is not None and limit > 2 * Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = limit  # raised on purpose: Pillow would refuse what we allow
    try:
        with warnings.catch_warnings():  # the limit below replaces Pillow's warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path, formats=_READ_FORMATS)
        with img:
            _check_pixels(path, img.size, limit)
            yield img
    except Image.DecompressionBombError as exc:
        raise ImageError(
            f"cannot read image '{path}': image is too large ({_one_line(exc)}); "
            f"if you trust the file, raise {MAX_PIXELS_ENV}"
        ) from exc
    except UnidentifiedImageError as exc:
        raise ImageError(
            f"cannot read image '{path}': not a recognised image file; {_READ_HINT}"
        ) from exc
    except PermissionError as exc:
        raise ImageError(
            f"cannot read image '{path}': permission denied; make the file readable"
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(
            f"cannot read image '{path}': file is truncated or corrupt ({_one_line(exc)}); "
            f"{_READ_HINT}"
        ) from exc


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation tag (1 = as stored); unreadable EXIF counts as 1."""
    try:
        return int(img.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception:  # noqa: BLE001 - broken EXIF must not make a good image unreadable
        return 1


def _open_and_decode(path: Path, max_pixels: int | None = None) -> Image.Image:
    """Open and fully decode a file, oriented as it is displayed (EXIF orientation applied).

    `load()` forces the whole pixel stream to be decoded, so truncated files fail here
    instead of silently yielding a partially grey image (LOAD_TRUNCATED_IMAGES is left False).
    """
    with _opened(path, max_pixels) as img:
        img.load()
        if _orientation(img) == 1:
            return img.copy()
        try:
            oriented = ImageOps.exif_transpose(img)
        except Exception:  # noqa: BLE001 - keep the stored orientation rather than fail
            warnings.warn(
                f"image '{path}' has an unreadable EXIF orientation; it is used as stored", UserWarning, stacklevel=3
            )
            return img.copy()
        return oriented if oriented is not None else img.copy()


@dataclass(frozen=True)
class ImageInfo:
    """What a file's header says, without decoding its pixels.

    `width`/`height` are as displayed (EXIF orientation applied), `grayscale` is true for
    single-channel files (L, 1-bit, 16-bit gray, gray with alpha): `read_image(path,
    keep_gray=True)` returns those as HxW, and the Upscaler keeps them grayscale.
    """

    width: int
    height: int
    mode: str
    format: str
    grayscale: bool
    orientation: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def read_image_info(path: Path | str, max_pixels: int | None = None) -> ImageInfo:
    """Header-only facts about an image file (size as displayed, mode, grayscale).

    Fails like `read_image` for a missing, unrecognised or too large file, so a batch can
    check its inputs (and the memory they need) before any engine is built.
    """
    path = Path(path)
    _check_readable_path(path)
    with _opened(path, max_pixels) as img:
        orientation = _orientation(img)
        width, height = img.size
        if orientation in _SWAPPED_ORIENTATIONS:
            width, height = height, width
        return ImageInfo(width, height, img.mode, str(img.format), img.mode in _GRAY_MODES, orientation)


def _has_alpha(img: Image.Image) -> bool:
    """True for modes that carry transparency, including palette images with a tRNS entry."""
    return img.mode in _ALPHA_MODES or (img.mode == "P" and "transparency" in img.info)


def _sixteen_bit_to_uint8(values: np.ndarray) -> np.ndarray:
    """Scale 0..65535 data to 0..255 with rounding (v * 255 / 65535)."""
    wide = np.clip(values.astype(np.float64), 0.0, 65535.0)
    return np.round(wide * (255.0 / 65535.0)).astype(np.uint8)


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    """Replicate a HxW channel into HxWx3 so every caller sees RGB."""
    return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))


def _pil_to_uint8(img: Image.Image, path: Path, keep_gray: bool) -> np.ndarray:
    """Convert any decoded Pillow mode to HxWx3 uint8 RGB (HxW for grayscale if `keep_gray`)."""
    expand = (lambda gray: gray) if keep_gray else _gray_to_rgb  # noqa: E731
    if _has_alpha(img):
        warnings.warn(
            f"image '{path}' has an alpha channel; it is ignored (only RGB is super-resolved)",
            UserWarning,
            stacklevel=3,
        )
        img = img.convert("LA" if img.mode in ("LA", "La") else "RGBA")
        img = img.convert("L" if img.mode == "LA" else "RGB")
    if img.mode in _SIXTEEN_BIT_MODES:
        return expand(_sixteen_bit_to_uint8(np.asarray(img)))
    if img.mode == "F":
        raise ImageError(
            f"cannot read image '{path}': floating-point images are not supported; "
            "convert it to an 8- or 16-bit image"
        )
    if img.mode in ("1", "L"):
        return expand(np.array(img.convert("L"), dtype=np.uint8))
    try:
        rgb = img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageError(
            f"cannot read image '{path}': colour mode {img.mode} is not supported; "
            "save it as an RGB or grayscale image"
        ) from exc
    return np.array(rgb, dtype=np.uint8)


def read_image(path: Path | str, *, keep_gray: bool = False, max_pixels: int | None = None) -> np.ndarray:
    """Read a PNG/JPEG/BMP/TIFF/WebP file as HxWx3 uint8 RGB, oriented as displayed.

    Grayscale is replicated to three channels (or, with `keep_gray`, returned as HxW so that
    the Upscaler keeps it grayscale), alpha is dropped with a warning, 16-bit data is scaled to
    8 bits and the EXIF orientation is applied, so the model always receives the picture the
    user sees. Files over `pixel_limit(max_pixels)` pixels are refused from their header.
    """
    path = Path(path)
    _check_readable_path(path)
    img = _open_and_decode(path, max_pixels)
    image = _pil_to_uint8(img, path, keep_gray)
    channels_ok = image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)
    if not channels_ok or image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageError(f"cannot read image '{path}': unexpected pixel layout; {_READ_HINT}")
    return image


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Round and clip a 0..255 image to uint8 exactly as saving a PNG would.

    NaN or Inf is refused (`NonFiniteOutput`), never turned into black or white pixels: a
    picture made from them would look like a result and be garbage.
    """
    array = np.asarray(image)
    if array.dtype == np.uint8:
        return array
    check_finite(array, "image")
    return np.clip(np.round(array), 0, 255).astype(np.uint8)


FINITE_HINT = "run it in fp32 or bf16 (--precision fp32)"


def check_finite(array: np.ndarray, what: str, hint: str = FINITE_HINT) -> None:
    """Raise `NonFiniteOutput` naming `what` (and saying `hint`) when `array` holds NaN or Inf."""
    if np.issubdtype(np.asarray(array).dtype, np.floating) and not np.isfinite(array).all():
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise NonFiniteOutput(f"{what} has {bad} NaN/Inf value(s) of {np.size(array)}; nothing was written; {hint}")


def _output_format(path: Path) -> str:
    """Pick the Pillow format from the file extension, refusing unknown ones."""
    fmt = _WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        webp = "" if _WEBP else " (.webp needs a Pillow built with libwebp)"
        raise ImageError(
            f"cannot write image '{path}': unsupported extension '{path.suffix}'; "
            f"use {', '.join(_WRITE_FORMATS)}{webp}"
        )
    return fmt


def _check_output_folder(path: Path) -> Path:
    """Return the output folder, raising a one-line ImageError if it cannot be used."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ImageError(
            f"cannot write image '{path}': output folder '{folder}' does not exist; create it first"
        )
    if path.is_dir():
        raise ImageError(f"cannot write image '{path}': a directory has that name; pick a file name")
    return folder


def _prepare_pixels(image: np.ndarray) -> np.ndarray:
    """Validate the array layout and convert it to uint8 for encoding."""
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise ValueError(f"write_image expects an HxWx3 (or HxW) array, got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"write_image got an empty image of shape {array.shape}")
    return np.ascontiguousarray(to_uint8(array))


def _encode_to(path: Path, folder: Path, pixels: np.ndarray, fmt: str) -> None:
    """Encode into a temporary beside `path` and rename it into place (`fileio.atomic_path`)."""
    del folder  # checked by the caller; atomic_path writes beside `path`
    with atomic_path(path) as tmp:
        Image.fromarray(pixels).save(tmp, format=fmt, **dict(_SAVE_OPTIONS.get(fmt, {})))


def write_image(path: Path | str, image: np.ndarray) -> None:
    """Write an HxWx3 (or HxW grayscale) image (uint8, or float 0..255 rounded) atomically, in
    the format its extension names (.png, .jpg/.jpeg, .bmp, .tif/.tiff, .webp).

    Readers never see a half-written file: the data goes to a temp file in the same folder
    and is renamed over the target only once complete and fsynced.
    """
    path = Path(path)
    fmt = _output_format(path)
    pixels = _prepare_pixels(image)
    folder = _check_output_folder(path)
    try:
        _encode_to(path, folder, pixels, fmt)
    except PermissionError as exc:
        raise ImageError(
            f"cannot write image '{path}': permission denied in folder '{folder}'; "
            "choose a writable output folder"
        ) from exc
    except OSError as exc:
        raise ImageError(
            f"cannot write image '{path}' in folder '{folder}': {_one_line(exc)}; "
            "check free space and permissions of the output folder"
        ) from exc


# --------------------------------------------------------------------------------------------
# Listing
# --------------------------------------------------------------------------------------------


def list_images(folder: Path) -> list[Path]:
    """Sorted image files directly inside `folder` (case-insensitive extension match).

    Hidden files (".name") are skipped: they are editor/OS droppings such as macOS "._x.png"
    or our own in-progress temp files, never real inputs.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"image folder '{folder}' does not exist; pass an existing folder")
    return sorted(
        entry
        for entry in folder.iterdir()
        if entry.is_file()
        and not entry.name.startswith(".")
        and entry.suffix.lower() in IMAGE_EXTENSIONS
    )


# --------------------------------------------------------------------------------------------
# MATLAB-compatible bicubic imresize
# --------------------------------------------------------------------------------------------


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys cubic convolution kernel with a = -0.5 (MATLAB's 'bicubic')."""
    absx = np.abs(x)
    absx2 = absx * absx
    absx3 = absx2 * absx
    near = (1.5 * absx3 - 2.5 * absx2 + 1.0) * (absx <= 1.0)
    far = (-0.5 * absx3 + 2.5 * absx2 - 4.0 * absx + 2.0) * ((absx > 1.0) & (absx <= 2.0))
    return near + far


def _contributions(
    in_length: int, out_length: int, scale: float, antialiasing: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Port of MATLAB imresize's `contributions`: (weights, 0-based indices), both out x P.

    Downscaling with antialiasing widens the kernel by 1/scale (a low-pass filter); indices
    outside the input are mirrored symmetrically and all-zero weight columns are dropped,
    exactly like MATLAB, so the result matches the published LR images bit for bit.
    """
    kernel_width = 4.0
    stretch = scale < 1.0 and antialiasing
    if stretch:
        kernel_width = kernel_width / scale
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - kernel_width / 2.0)
    taps = int(math.ceil(kernel_width)) + 2
    indices = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]
    distance = u[:, None] - indices
    weights = scale * _cubic(scale * distance) if stretch else _cubic(distance)
    weights = weights / weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_length), np.arange(in_length - 1, -1, -1)])
    flat = mirror[np.mod(indices.astype(np.int64) - 1, mirror.size)]
    keep = np.any(weights != 0.0, axis=0)
    return weights[:, keep], flat[:, keep]


def _resize_along(
    array: np.ndarray, axis: int, weights: np.ndarray, indices: np.ndarray
) -> np.ndarray:
    """Apply one 1-D resampling pass along `axis` (float64 accumulate, tap by tap).

    Looping over the few taps keeps memory at one output-sized buffer instead of gathering
    an out x taps x ... tensor, and `np.take` along the axis avoids slow strided copies.
    """
    weight_shape = [1] * array.ndim
    weight_shape[axis] = -1
    out_shape = list(array.shape)
    out_shape[axis] = weights.shape[0]
    out = np.zeros(out_shape, dtype=np.float64)
    for tap in range(weights.shape[1]):
        out += weights[:, tap].reshape(weight_shape) * np.take(array, indices[:, tap], axis=axis)
    return out


def _round_uint8_matlab(values: np.ndarray) -> np.ndarray:
    """MATLAB's double->uint8 cast: round half away from zero, saturate to 0..255."""
    return np.clip(np.floor(values + 0.5), 0, 255).astype(np.uint8)


def _output_shape(
    in_shape: tuple[int, int], scale: float | None, output_shape: tuple[int, int] | None
) -> tuple[tuple[int, int], tuple[float, float]]:
    """Resolve (out_h, out_w) and per-dimension scale factors like MATLAB does."""
    if (scale is None) == (output_shape is None):
        raise ValueError("imresize needs exactly one of `scale` or `output_shape`")
    if output_shape is not None:
        out_h, out_w = (int(output_shape[0]), int(output_shape[1]))
        if out_h <= 0 or out_w <= 0:
            raise ValueError(f"imresize output_shape must be positive, got {output_shape}")
        return (out_h, out_w), (out_h / in_shape[0], out_w / in_shape[1])
    assert scale is not None
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"imresize scale must be a positive finite number, got {scale}")
    # MATLAB: ceil(scale * size); the tiny tolerance absorbs 1/3-style rounding noise.
    out = tuple(max(1, math.ceil(n * scale - 1e-9)) for n in in_shape)
    return (out[0], out[1]), (float(scale), float(scale))


def imresize(
    image: np.ndarray,
    scale: float | None = None,
    output_shape: tuple[int, int] | None = None,
    antialiasing: bool = True,
) -> np.ndarray:
    """MATLAB-compatible bicubic `imresize` for HxW or HxWxC arrays.

    uint8 input gives uint8 output and, as in MATLAB, every 1-D pass is rounded to uint8
    before the next one; any other dtype is computed in float64 and returned as float32.
    The dimension with the smaller scale goes first (height first on ties), as MATLAB does.
    """
    array = np.asarray(image)
    if array.ndim not in (2, 3) or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"imresize expects a non-empty HxW or HxWxC array, got {array.shape}")
    is_uint8 = array.dtype == np.uint8
    in_shape = (int(array.shape[0]), int(array.shape[1]))
    out_shape, scales = _output_shape(in_shape, scale, output_shape)
    order = sorted(range(2), key=lambda dim: scales[dim])  # stable: height first on ties
    result: np.ndarray = array if is_uint8 else array.astype(np.float64)
    for dim in order:
        if in_shape[dim] == out_shape[dim] and scales[dim] == 1.0:
            continue
        weights, indices = _contributions(in_shape[dim], out_shape[dim], scales[dim], antialiasing)
        result = _resize_along(result, dim, weights, indices)
        if is_uint8:
            result = _round_uint8_matlab(result)
    if is_uint8:
        return np.ascontiguousarray(result.astype(np.uint8, copy=False))
    return np.ascontiguousarray(result, dtype=np.float32)


# --------------------------------------------------------------------------------------------
# Colour conversions and layout helpers
# --------------------------------------------------------------------------------------------


def _check_rgb(image: np.ndarray, name: str) -> np.ndarray:
    """Return the image as float64, insisting on a trailing channel axis of 3."""
    array = np.asarray(image)
    if array.ndim < 1 or array.shape[-1] != 3:
        raise ValueError(f"{name} expects an ...x3 array, got shape {array.shape}")
    return array.astype(np.float64)


def rgb_to_y(image: np.ndarray) -> np.ndarray:
    """BT.601 luma on 16..235 from 0..255 RGB, as MATLAB rgb2ycbcr (used by SR metrics)."""
    rgb = _check_rgb(image, "rgb_to_y")
    return 16.0 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255.0


def rgb_to_ycbcr(image: np.ndarray) -> np.ndarray:
    """MATLAB rgb2ycbcr on the 0..255 scale (float64, no rounding)."""
    rgb = _check_rgb(image, "rgb_to_ycbcr")
    return rgb @ _YCBCR_MATRIX.T + _YCBCR_OFFSET


def ycbcr_to_rgb(image: np.ndarray) -> np.ndarray:
    """Exact inverse of `rgb_to_ycbcr` (MATLAB ycbcr2rgb on the 0..255 scale, float64)."""
    ycc = _check_rgb(image, "ycbcr_to_rgb")
    return (ycc - _YCBCR_OFFSET) @ _YCBCR_INVERSE.T


def modcrop(image: np.ndarray, scale: int) -> np.ndarray:
    """Crop H and W down to multiples of `scale` so HR and LR sizes divide exactly."""
    if int(scale) != scale or scale < 1:
        raise ValueError(f"modcrop scale must be a positive integer, got {scale}")
    array = np.asarray(image)
    height = array.shape[0] - array.shape[0] % int(scale)
    width = array.shape[1] - array.shape[1] % int(scale)
    return array[:height, :width, ...]


def hwc_to_nchw(image: np.ndarray) -> np.ndarray:
    """HxWx3 image -> contiguous float32 1x3xHxW tensor for the network."""
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"hwc_to_nchw expects an HxWx3 array, got shape {array.shape}")
    return np.ascontiguousarray(array.transpose(2, 0, 1)[None], dtype=np.float32)


def nchw_to_hwc(tensor: np.ndarray) -> np.ndarray:
    """1x3xHxW or 3xHxW network output -> contiguous float32 HxWx3 image."""
    array = np.asarray(tensor)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3 or array.shape[0] != 3:
        raise ValueError(f"nchw_to_hwc expects a 1x3xHxW or 3xHxW array, got shape {array.shape}")
    return np.ascontiguousarray(array.transpose(1, 2, 0), dtype=np.float32)
