"""Image files: reading (EXIF orientation applied, decompression bombs refused), listing, and
the uint8 conversion that every output goes through.

Reading gives the picture the user sees: the EXIF orientation is applied, and a file larger
than the pixel limit (`pixel_limit`: Pillow's decompression-bomb threshold unless
$ELAN_DEPLOY_MAX_PIXELS or `max_pixels` says otherwise) is refused from its header, before a
byte of it is decoded. Grayscale files can be kept single-channel (`keep_gray`), so that the
Upscaler writes grayscale for grayscale.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError, features

from elan_deploy.errors import DatasetError, ElanDeployError, ImageError, NonFiniteOutput

_WEBP = features.check("webp")  # Pillow wheels ship libwebp; a source build may not
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff") + ((".webp",) if _WEBP else ())

# Pillow format names we decode; anything else is refused so that only well-known,
# widely used decoders ever see user files.
_READ_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "BMP", "TIFF") + (("WEBP",) if _WEBP else ())
_READ_HINT = "pass a PNG, JPEG, BMP, TIFF" + (" or WebP file" if _WEBP else " file")
# Decompression-bomb guard: images over this many pixels are refused from their header, before
# any pixel is decoded. Pillow's own threshold (it only warns up to twice this); a 12000x12000
# PNG of 420 KB would otherwise decode to 432 MB and upscale x4 into a 25.7 GiB float array.
DECODE_MAX_PIXELS = 89_478_485
MAX_PIXELS_ENV = "ELAN_DEPLOY_MAX_PIXELS"
_ALPHA_MODES: frozenset[str] = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_SIXTEEN_BIT_MODES: frozenset[str] = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
# Single-channel modes (with or without alpha): the image is grayscale, whatever its values.
_GRAY_MODES: frozenset[str] = frozenset({"1", "L", "LA", "La"}) | _SIXTEEN_BIT_MODES
# EXIF orientations that turn the stored image by 90 degrees (displayed width = stored height).
_SWAPPED_ORIENTATIONS: frozenset[int] = frozenset({5, 6, 7, 8})


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
    DECODE_MAX_PIXELS (Pillow's own threshold)."""
    if max_pixels is not None:
        value, origin = max_pixels, "max_pixels"
    elif os.environ.get(MAX_PIXELS_ENV, "").strip():
        text = os.environ[MAX_PIXELS_ENV].strip()
        try:
            value, origin = int(text.replace("_", "")), MAX_PIXELS_ENV
        except ValueError:
            raise ElanDeployError(
                f"{MAX_PIXELS_ENV}='{text}' is not a whole number of pixels; e.g. {DECODE_MAX_PIXELS}"
            ) from None
    else:
        return DECODE_MAX_PIXELS
    if value < 1:
        raise ElanDeployError(f"{origin}={value} must be a positive number of pixels; e.g. {DECODE_MAX_PIXELS}")
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
# uint8 conversion
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

