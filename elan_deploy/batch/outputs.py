"""Writing outputs, and recognising an output this tool already wrote completely.

A resumable run must tell a finished output from everything else at the output path: a file the
user put there, a partial file, or an output of another input or other settings. Three facts
settle it, all cheap compared with upscaling:

1. Outputs are written atomically (temporary sibling, fsync, rename), so a file at the final
   name was complete when it was renamed; a killed run leaves only hidden temporaries, which the
   next write of the same target removes.
2. Every output records the sha256 of the input's bytes, a digest of the settings that determine
   the pixels (model, scale, runtime, precision, engine shapes, tiling; for a video also the
   encoder settings) and, for images, the output size. Formats with metadata carry it inside: a
   PNG text chunk (`elan-deploy`), the EXIF ImageDescription of a JPEG or WebP, the TIFF
   ImageDescription. A BMP or a video cannot, so a hidden record beside it
   (`elan_deploy.provenance`) holds the tag with the sha256 and size of the bytes written. A
   user's file has no such record; an output of another input or model has other values.
3. The file is checked whole: a PNG's `verify()` checks every chunk's CRC up to IEND, a JPEG,
   WebP or TIFF is decoded, and a file with a record must still match its sha256. A file damaged
   or truncated after it was written is not "done".

Only an output passing all three is skipped as done. mtimes are not used: copying a folder or
touching a file changes them without changing what the file holds.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, PngImagePlugin

from elan_deploy.errors import ImageError
from elan_deploy.fileio import file_sha256
from elan_deploy.provenance import matching_record, record_file, recorded_path

TAG_KEY = "elan-deploy"

# Formats a single output file may take, by extension (Pillow writes all of them).
OUTPUT_FORMATS: dict[str, str] = {
    ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF", ".webp": "WEBP",
}
_SAVE_OPTIONS: dict[str, dict[str, object]] = {"JPEG": {"quality": 95}, "WEBP": {"quality": 95}}
# Formats whose metadata carries the tag: PNG in a text chunk, the others in ImageDescription
# (EXIF tag 270 for JPEG and WebP, the TIFF tag itself for TIFF). BMP gets a record beside it.
_EMBEDDED_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF")
IMAGE_DESCRIPTION = 0x010E


@dataclass(frozen=True)
class JobSettings:
    """What determines an output's pixels besides the input; its digest is stored in every PNG."""

    model: str  # ModelSource.fingerprint(): checkpoint (or ONNX) hash and export strategies
    scale: int
    runtime: str
    precision: str
    shapes: str
    tile: int | None
    overlap: int

    def digest(self, **more: Any) -> str:
        """The digest of these settings; `more` adds what else decides the output (a video's encoder)."""
        return hashlib.sha256(json.dumps({**asdict(self), **more}, sort_keys=True).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class OutputTag:
    """What produced an output: the input's sha256, the job digest and, for images, the output size."""

    source_sha256: str
    job: str
    width: int | None = None
    height: int | None = None

    def text(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def parse(cls, fields: object) -> OutputTag | None:
        try:
            return cls(**json.loads(fields) if isinstance(fields, (str, bytes)) else dict(fields))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None


def output_format(path: Path) -> str:
    fmt = OUTPUT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        names = ", ".join(OUTPUT_FORMATS)
        raise ImageError(f"cannot write '{path.name}': '{path.suffix}' is not an image format; use one of {names}")
    return fmt


def _embedding_options(fmt: str, tag: OutputTag) -> dict[str, object]:
    """Save options that put the tag into the file's own metadata."""
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_text(TAG_KEY, tag.text())
        return {"pnginfo": info}
    description = f"{TAG_KEY} {tag.text()}"
    if fmt == "TIFF":
        return {"description": description}
    exif = Image.Exif()
    exif[IMAGE_DESCRIPTION] = description
    return {"exif": exif.tobytes()}


def write_output(path: Path, pixels: np.ndarray, tag: OutputTag | None) -> None:
    """Encode HxWx3 uint8 pixels into `path` atomically, with the tag (see the module doc)."""
    from elan_deploy.fileio import atomic_path

    fmt = output_format(path)
    options = dict(_SAVE_OPTIONS.get(fmt, {}))
    embedded = tag is not None and fmt in _EMBEDDED_FORMATS
    if embedded:
        options.update(_embedding_options(fmt, tag))  # type: ignore[arg-type]
    target = recorded_path(path, asdict(tag)) if tag is not None and not embedded else atomic_path(path)
    try:
        with target as tmp:
            Image.fromarray(np.ascontiguousarray(pixels)).save(tmp, format=fmt, **options)
    except OSError as exc:
        raise ImageError(f"cannot write '{path}': {exc.strerror or exc}; check free space and permissions") from None


def record_output(path: Path, tag: OutputTag) -> None:
    """Record an output another writer published (a video) so that a rerun knows it as complete."""
    record_file(path, asdict(tag))


@contextlib.contextmanager
def _any_size() -> Iterator[None]:
    """Our own outputs may exceed Pillow's decompression-bomb limit (they are 4x the input)."""
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _embedded_tag(path: Path) -> OutputTag | None:
    with _any_size(), Image.open(path, formats=list(_EMBEDDED_FORMATS)) as img:
        size = img.size
        if img.format == "PNG":
            text = img.info.get(TAG_KEY)  # tEXt before IDAT; `img.text` would decode the pixels
            if text is None:
                return None
            img.verify()  # CRC of every chunk up to IEND: a truncated or damaged file fails
        else:
            description = str(img.getexif().get(IMAGE_DESCRIPTION) or "")
            if not description.startswith(f"{TAG_KEY} "):
                return None
            text = description[len(TAG_KEY) + 1 :]
            img.load()  # decodes every byte: a truncated or damaged file fails
    tag = OutputTag.parse(text)
    return tag if tag is not None and (tag.width, tag.height) == size else None


def read_tag(path: Path) -> OutputTag | None:
    """The tag of a complete output this tool wrote, else None (no tag, damaged or changed file)."""
    record = matching_record(path)
    if record is not None:  # its sha256 vouches for every byte
        return OutputTag.parse(record.tag) if record.tag is not None else None
    try:
        return _embedded_tag(path)
    except Exception:  # noqa: BLE001 - any unreadable file is simply "not ours"
        return None


class OutputState(str, enum.Enum):
    MISSING = "missing"
    DONE = "done"  # complete, this input, these settings
    OTHER = "other"  # written by this tool, for another input or other settings
    FOREIGN = "foreign"  # not written by this tool (or damaged)


def output_state(output: Path, source: Path | None = None, job: str | None = None) -> OutputState:
    """Classify an existing output; without `source`/`job` only MISSING/FOREIGN/OTHER are told apart."""
    if not output.exists() and not output.is_symlink():
        return OutputState.MISSING
    if output.is_dir() or output.is_symlink():
        return OutputState.FOREIGN
    tag = read_tag(output)
    if tag is None:
        return OutputState.FOREIGN
    if source is None or job is None:
        return OutputState.OTHER
    try:
        same_input = tag.source_sha256 == file_sha256(source)
    except OSError:
        return OutputState.OTHER
    return OutputState.DONE if same_input and tag.job == job else OutputState.OTHER
