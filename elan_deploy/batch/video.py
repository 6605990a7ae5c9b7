"""Video files through the Upscaler with PyAV: decode, upscale, encode in one stream.

Frames go from the decoder through `Upscaler.upscale_uint8` (which tiles and batches inside the
frame) straight into the encoder, one at a time, so memory is a few frames whatever the length
of the clip and no image files are written. Every decoded frame is encoded with its own
timestamp in the input's time base, so frame count, frame rate (constant or variable) and
duration are kept. Audio streams are copied packet for packet (remuxed, never re-encoded), so
they keep their exact timing. Subtitle and data streams are not copied.

The output is written to a hidden temporary beside the target and renamed when complete.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from elan_deploy.batch.extras import require
from elan_deploy.errors import ElanDeployError, ImageError, WorkFailed

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


def _pixel_format(codec, width: int, height: int) -> str:
    names = [f.name for f in (codec.video_formats or [])]
    if width % 2 == 0 and height % 2 == 0 and (not names or "yuv420p" in names):
        return "yuv420p"
    for name in ("yuv444p", "yuv420p"):
        if name in names and (name != "yuv420p" or (width % 2 == 0 and height % 2 == 0)):
            return name
    raise ElanDeployError(f"{codec.name} cannot encode an odd output size {width}x{height}; use another --scale or --codec libx264")


@dataclass
class VideoReport:
    frames: int
    seconds: float
    codec: str
    audio_streams: int


def upscale_video(
    source: Path,
    target: Path,
    upscale_frame: Callable[[np.ndarray], np.ndarray],
    scale: int,
    options: VideoOptions,
    on_frame: Callable[[int, int | None], None] | None = None,
) -> VideoReport:
    """Upscale every frame of `source` into `target`; `on_frame(done, total)` reports progress."""
    av = require("av")
    from elan_deploy.fileio import atomic_path

    codec_name, _ = choose_codec(options.codec)
    check_options(codec_name, options)
    try:
        reader = av.open(str(source))
    except (av.error.FFmpegError, OSError) as exc:
        raise ImageError(f"cannot read video '{source}': {' '.join(str(exc).split())}") from None
    start = time.perf_counter()
    with reader:
        if not reader.streams.video:
            raise ImageError(f"'{source}' holds no video stream")
        vin = reader.streams.video[0]
        vin.thread_type = "AUTO"
        audio_in = list(reader.streams.audio)
        rate = vin.average_rate or vin.guessed_rate or Fraction(25)
        total = vin.frames or (int(float(vin.duration * vin.time_base) * rate) if vin.duration else None)
        width, height = vin.codec_context.width * scale, vin.codec_context.height * scale
        with atomic_path(target) as tmp:
            try:
                writer = av.open(str(tmp), mode="w", format=_container_format(av, target))
            except (av.error.FFmpegError, ValueError) as exc:
                raise ElanDeployError(f"cannot write video '{target.name}': {' '.join(str(exc).split())}; use .mp4 or .mkv") from None
            with writer:
                vout = writer.add_stream(codec_name, rate=rate)
                vout.width, vout.height = width, height
                vout.pix_fmt = _pixel_format(vout.codec, width, height)
                vout.time_base = vin.time_base
                vout.codec_context.time_base = vin.time_base
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
                audio_out = {}
                for stream in audio_in:
                    try:
                        audio_out[stream.index] = writer.add_stream_from_template(stream)
                    except (av.error.FFmpegError, ValueError) as exc:
                        raise ElanDeployError(
                            f"cannot copy audio ({stream.codec_context.name}) into '{target.suffix}': {exc}; use .mkv"
                        ) from None
                frames = _transcode(av, reader, vin, audio_in, vout, audio_out, writer, upscale_frame, rate, total, on_frame)
    return VideoReport(frames, time.perf_counter() - start, codec_name, len(audio_in))


def _container_format(av, target: Path) -> str | None:
    """The muxer for the target's extension (the temporary file's name must not decide it)."""
    return {".mkv": "matroska", ".webm": "webm", ".mov": "mov", ".mp4": "mp4", ".m4v": "mp4", ".avi": "avi",
            ".ts": "mpegts", ".mpg": "mpeg", ".mpeg": "mpeg", ".flv": "flv", ".wmv": "asf"}.get(target.suffix.lower())


def _transcode(av, reader, vin, audio_in, vout, audio_out, writer, upscale_frame, rate, total, on_frame) -> int:
    frames = 0
    fallback_tb = Fraction(1, 1) / rate
    try:
        for packet in reader.demux(vin, *audio_in):
            if packet.stream.index in audio_out:
                if packet.dts is None:  # the demuxer's end-of-stream marker
                    continue
                packet.stream = audio_out[packet.stream.index]
                writer.mux(packet)
                continue
            for frame in packet.decode():
                rgb = frame.to_ndarray(format="rgb24")
                out = av.VideoFrame.from_ndarray(np.ascontiguousarray(upscale_frame(rgb)), format="rgb24")
                if frame.pts is not None:
                    out.pts, out.time_base = frame.pts, frame.time_base
                else:  # containers without timestamps: frame index at the nominal rate
                    out.pts = round(frames * fallback_tb / vin.time_base)
                    out.time_base = vin.time_base
                writer.mux(vout.encode(out))
                frames += 1
                if on_frame is not None:
                    on_frame(frames, total)
        writer.mux(vout.encode(None))
    except av.error.FFmpegError as exc:
        raise WorkFailed(f"video failed at frame {frames}: {' '.join(str(exc).split())}; nothing was written") from None
    if frames == 0:
        raise ImageError("the video stream decoded to no frames; nothing was written")
    return frames
