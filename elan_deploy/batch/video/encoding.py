"""Encoder settings for the upscaled stream: which codec, how its quality is set, which muxer.

The user's flags are checked here, before any frame is decoded, so a wrong --crf or --codec fails
at once rather than after minutes of upscaling.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from elan_deploy.batch.extras import require
from elan_deploy.errors import ElanDeployError

PREFERRED_CODEC = "libx264"  # H.264
FALLBACK_CODEC = "mpeg4"  # MPEG-4 Part 2: in every FFmpeg build PyAV ships with
CRF_CODECS = {"libx264": 51, "libx265": 51, "libvpx-vp9": 63, "libaom-av1": 63, "libsvtav1": 63}
DEFAULT_CRF = 18  # visually lossless for H.264; SR output should not be smeared by the encoder
BITS_PER_PIXEL = 0.2  # default bit rate for codecs without a quality mode, per pixel per frame


@dataclass(frozen=True)
class VideoOptions:
    codec: str | None = None
    crf: int | None = None
    bitrate: int | None = None  # bits/s
    allow_partial: bool = False  # write what decodes of a truncated or damaged video (with a warning)


def parse_bitrate(text: str) -> int:
    """'4M', '800k', '2500000' -> bits/s."""
    units = {"k": 1_000, "m": 1_000_000, "g": 1_000_000_000}
    value = text.strip().lower()
    factor = units.get(value[-1:], 1)
    try:
        number = float(value[:-1] if value[-1:] in units else value)
    except ValueError:
        raise ElanDeployError(f"bad --bitrate '{text}'; write bits/s like 4M, 800k or 2500000") from None
    if number <= 0:
        raise ElanDeployError(f"--bitrate must be positive, got '{text}'")
    return int(number * factor)


def choose_codec(requested: str | None) -> tuple[str, str | None]:
    """(encoder name, note): the requested one, else H.264, else the stated fallback."""
    av = require("av")

    def available(name: str) -> bool:
        try:
            av.codec.Codec(name, "w")
        except Exception:  # noqa: BLE001 - UnknownCodecError, or a decoder-only codec
            return False
        return True

    if requested:
        if not available(requested):
            raise ElanDeployError(f"this PyAV build has no '{requested}' video encoder; try --codec {PREFERRED_CODEC} or {FALLBACK_CODEC}")
        return requested, None
    if available(PREFERRED_CODEC):
        return PREFERRED_CODEC, None
    return FALLBACK_CODEC, f"this PyAV build has no H.264 encoder ({PREFERRED_CODEC}); encoding MPEG-4 Part 2 ({FALLBACK_CODEC}) instead"


def check_options(codec: str, options: VideoOptions) -> None:
    if options.crf is not None:
        top = CRF_CODECS.get(codec)
        if top is None:
            raise ElanDeployError(f"--crf works with {', '.join(CRF_CODECS)}, not '{codec}'; pass --bitrate instead")
        if not 0 <= options.crf <= top:
            raise ElanDeployError(f"--crf for {codec} must be 0..{top}, got {options.crf}")



def set_quality(vout, codec_name: str, options: VideoOptions, width: int, height: int, rate: Fraction) -> None:
    """crf (default 18) for codecs with a quality mode, else a bit rate: --bitrate or 0.2 bits per pixel."""
    encoder_options = {}
    if options.bitrate is not None:
        vout.bit_rate = options.bitrate
        if codec_name in CRF_CODECS:
            encoder_options["b"] = str(options.bitrate)
    elif codec_name in CRF_CODECS:
        encoder_options["crf"] = str(options.crf if options.crf is not None else DEFAULT_CRF)
        if codec_name == "libvpx-vp9":
            encoder_options["b"] = "0"
    else:
        vout.bit_rate = int(width * height * float(rate) * BITS_PER_PIXEL)
    vout.options = encoder_options


def container_format(av, target: Path) -> str | None:
    """The muxer for the target's extension (the temporary file's name must not decide it)."""
    return {".mkv": "matroska", ".webm": "webm", ".mov": "mov", ".mp4": "mp4", ".m4v": "mp4", ".avi": "avi",
            ".ts": "mpegts", ".mpg": "mpeg", ".mpeg": "mpeg", ".flv": "flv", ".wmv": "asf"}.get(target.suffix.lower())
