"""The driver: demux, decode, upscale and encode in one pass, writing the output atomically.

Frames go one at a time from the decoder through the `Upscaler` into the encoder, so memory stays
a few frames whatever the clip's length. A short or damaged decode fails the video unless
`allow_partial` is set.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

from elan_deploy.batch.extras import require
from elan_deploy.batch.video.completeness import Decoded, missing
from elan_deploy.batch.video.encoding import VideoOptions, check_options, choose_codec, container_format, set_quality
from elan_deploy.batch.video.frames import frame_step
from elan_deploy.batch.video.pixels import choose_pixel_format
from elan_deploy.batch.video.probe import declared_length, probe_first_frame
from elan_deploy.errors import ElanDeployError, ImageError, WorkFailed

if TYPE_CHECKING:
    from elan_deploy.upscale import Upscaler

PARTIAL_HINT = "pass --allow-partial to write what decodes"


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


@dataclass
class VideoReport:
    frames: int
    seconds: float
    codec: str
    audio_streams: int
    notes: tuple[str, ...] = ()  # warnings: a partial decode, a bit depth or chroma the encoder could not keep


def upscale_video(
    source: Path,
    target: Path,
    upscaler: Upscaler,
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
        raise ImageError(f"cannot read video '{source}': {_one_line(exc)}") from None
    start = time.perf_counter()
    with reader:
        if not reader.streams.video:
            raise ImageError(f"'{source}' holds no video stream")
        vin = reader.streams.video[0]
        vin.thread_type = "AUTO"
        audio_in = list(reader.streams.audio)
        rate = vin.average_rate or vin.guessed_rate or Fraction(25)
        declared = declared_length(reader, vin)
        expected = declared.expected_frames(rate)
        first = probe_first_frame(av, source, vin)
        width, height = (n * upscaler.scale for n in first.orientation.size(first.width, first.height))
        notes = [first.note] if first.note else []
        with atomic_path(target) as tmp:
            try:
                writer = av.open(str(tmp), mode="w", format=container_format(av, target))
            except (av.error.FFmpegError, ValueError) as exc:
                raise ElanDeployError(f"cannot write video '{target.name}': {_one_line(exc)}; use .mp4 or .mkv") from None
            with writer:
                vout = writer.add_stream(codec_name, rate=rate)
                vout.width, vout.height = width, height
                layout, note = choose_pixel_format(vout.codec, width, height, first.layout, first.format_name)
                notes += [note] if note else []
                vout.pix_fmt = layout.name
                vout.time_base = vin.time_base
                vout.codec_context.time_base = vin.time_base
                set_quality(vout, codec_name, options, width, height, rate)
                audio_out = {}
                for stream in audio_in:
                    try:
                        audio_out[stream.index] = writer.add_stream_from_template(stream)
                    except (av.error.FFmpegError, ValueError) as exc:
                        raise ElanDeployError(
                            f"cannot copy audio ({stream.codec_context.name}) into '{target.suffix}': {exc}; use .mkv"
                        ) from None
                step = frame_step(av, upscaler, first.orientation, deep=layout.depth > 8)
                decoded = _transcode(av, reader, vin, audio_in, vout, audio_out, writer, step, rate,
                                     expected[0] if expected else None, on_frame, options.allow_partial)
                gap = missing(declared, decoded, rate)
                if gap and not options.allow_partial:
                    raise WorkFailed(f"the video is truncated or damaged: {gap}; nothing was written; {PARTIAL_HINT}")
                notes += [f"'{source.name}' is truncated or damaged: {gap}; '{target.name}' holds what decoded"] if gap else []
    return VideoReport(decoded.frames, time.perf_counter() - start, codec_name, len(audio_in), tuple(notes))


def _undecodable(frames: int, what: str) -> WorkFailed:
    return WorkFailed(f"the video does not decode after frame {frames} ({what}); nothing was written; {PARTIAL_HINT}")


def _transcode(av, reader, vin, audio_in, vout, audio_out, writer, step, rate, total, on_frame, allow_partial) -> Decoded:
    """Demux, decode, upscale, encode. A packet that does not decode, a frame decoded with errors
    or a read error fails at once, or (allow_partial) is counted and skipped."""
    decoded = Decoded()
    period = 1 / float(rate)
    fallback_tb = Fraction(1, 1) / rate
    packets = reader.demux(vin, *audio_in)
    try:
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError as exc:
                decoded.stopped = _one_line(exc)
                if not allow_partial:
                    raise _undecodable(decoded.frames, decoded.stopped) from None
                break
            if packet.stream.index in audio_out:
                if packet.dts is None:  # the demuxer's end-of-stream marker
                    continue
                packet.stream = audio_out[packet.stream.index]
                writer.mux(packet)
                continue
            decoded.discarded += bool(packet.is_discard and packet.size)
            try:
                frames = packet.decode()
            except av.error.FFmpegError as exc:
                decoded.bad_packets += 1
                if not allow_partial:
                    raise _undecodable(decoded.frames, _one_line(exc)) from None
                continue
            for frame in frames:
                decoded.add(frame, period)
                if frame.is_corrupt and not allow_partial:
                    raise _undecodable(decoded.frames - 1, "a frame decoded with errors")
                out = step(frame)
                if frame.pts is not None:
                    out.pts, out.time_base = frame.pts, frame.time_base
                else:  # containers without timestamps: frame index at the nominal rate
                    out.pts = round((decoded.frames - 1) * fallback_tb / vin.time_base)
                    out.time_base = vin.time_base
                writer.mux(vout.encode(out))
                if on_frame is not None:
                    on_frame(decoded.frames, total)
        writer.mux(vout.encode(None))
    except av.error.FFmpegError as exc:
        raise WorkFailed(f"video failed at frame {decoded.frames}: {_one_line(exc)}; nothing was written") from None
    if decoded.frames == 0:
        raise ImageError("the video stream decoded to no frames; nothing was written")
    return decoded
