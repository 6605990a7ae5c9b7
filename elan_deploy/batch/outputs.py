"""Writing outputs, and recognising an output this tool already wrote completely.

A resumable run must tell a finished output from everything else at the output path: a file the
user put there, a partial file, or an output of another input or other settings. Three facts
settle it, all cheap compared with upscaling:

1. Outputs are written atomically (temporary sibling, fsync, rename), so a file at the final
   name was complete when it was renamed; a killed run leaves only hidden temporaries, which the
   next write of the same target removes.
2. Every PNG output carries a text chunk (`elan-deploy`) recording the sha256 of the input's
   bytes, a digest of the settings that determine the pixels (model, scale, runtime, precision,
   engine shapes, tiling) and the output size. A user's file has no such chunk; an output of
   another input or model has other values.
3. The PNG is re-read: its header size must equal the recorded size and `verify()` checks every
   chunk's CRC up to IEND, so a file damaged or truncated after it was written is not "done".

Only an output passing all three is skipped as done. mtimes are not used: copying a folder or
touching a file changes them without changing what the file holds.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from elan_deploy.errors import ImageError

TAG_KEY = "elan-deploy"

# Formats a single output file may take, by extension (Pillow writes all of them).
OUTPUT_FORMATS: dict[str, str] = {
    ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF", ".webp": "WEBP",
}
_SAVE_OPTIONS: dict[str, dict[str, object]] = {"JPEG": {"quality": 95}, "WEBP": {"quality": 95}}


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

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class OutputTag:
    source_sha256: str
    job: str
    width: int
    height: int

    def text(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def output_format(path: Path) -> str:
    fmt = OUTPUT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        names = ", ".join(OUTPUT_FORMATS)
        raise ImageError(f"cannot write '{path.name}': '{path.suffix}' is not an image format; use one of {names}")
    return fmt


def write_output(path: Path, pixels: np.ndarray, tag: OutputTag | None) -> None:
    """Encode HxWx3 uint8 pixels into `path` atomically; PNGs get the tag (see the module doc)."""
    from elan_deploy.fileio import atomic_path

    fmt = output_format(path)
    options = dict(_SAVE_OPTIONS.get(fmt, {}))
    if fmt == "PNG" and tag is not None:
        info = PngImagePlugin.PngInfo()
        info.add_text(TAG_KEY, tag.text())
        options["pnginfo"] = info
    try:
        with atomic_path(path) as tmp:
            Image.fromarray(np.ascontiguousarray(pixels)).save(tmp, format=fmt, **options)
    except OSError as exc:
        raise ImageError(f"cannot write '{path}': {exc.strerror or exc}; check free space and permissions") from None


def read_tag(path: Path) -> OutputTag | None:
    """The tag of a complete PNG this tool wrote, else None (not a PNG, no tag, damaged file)."""
    try:
        with Image.open(path, formats=["PNG"]) as img:
            text = img.info.get(TAG_KEY)  # tEXt before IDAT; `img.text` would decode the pixels
            size = img.size
            if text is None:
                return None
            img.verify()  # CRC of every chunk up to IEND: a truncated or damaged file fails
        tag = OutputTag(**json.loads(text))
    except Exception:  # noqa: BLE001 - any unreadable file is simply "not ours"
        return None
    return tag if (tag.width, tag.height) == size else None


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
