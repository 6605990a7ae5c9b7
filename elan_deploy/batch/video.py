"""Video files through the Upscaler with PyAV: decode, upscale, encode in one stream.

Frames go from the decoder through the `Upscaler` (which tiles and batches inside the frame)
straight into the encoder, one at a time, so memory is a few frames whatever the length of the
clip and no image files are written. Every decoded frame is encoded with its own timestamp in the
input's time base, so frame count, frame rate (constant or variable) and duration are kept. Audio
streams are copied packet for packet (remuxed, never re-encoded), so they keep their exact
timing. Subtitle and data streams are not copied.

What players show is kept: a display matrix (phones store portrait video landscape with a
rotation) is applied to the frames, as still images apply their EXIF orientation, so the output
is upright in every player and container. Bit depth and chroma subsampling are kept where the
encoder can (10-bit frames go through the float Upscaler, never through 8 bits); otherwise one
note says what changed.

A decode that comes up short of what the container declares (frames or duration), or hits a
packet that does not decode, fails the video unless `allow_partial` is set: a truncated file is
not silently written as a shorter clip.

The output is written to a hidden temporary beside the target and renamed when complete.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from elan_deploy.batch.extras import require
from elan_deploy.errors import ElanDeployError, ImageError, WorkFailed

if TYPE_CHECKING:
    from elan_deploy.upscale import Upscaler

PREFERRED_CODEC = "libx264"  # H.264
FALLBACK_CODEC = "mpeg4"  # MPEG-4 Part 2: in every FFmpeg build PyAV ships with
CRF_CODECS = {"libx264": 51, "libx265": 51, "libvpx-vp9": 63, "libaom-av1": 63, "libsvtav1": 63}
DEFAULT_CRF = 18  # visually lossless for H.264; SR output should not be smeared by the encoder
BITS_PER_PIXEL = 0.2  # default bit rate for codecs without a quality mode, per pixel per frame
SHORT_BY_FRAMES = 1.5  # a decode ending this many frame periods before the declared duration is short
PARTIAL_HINT = "pass --allow-partial to write what decodes"


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


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


# --- orientation ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Orientation:
    """How a player turns a coded frame: `turns` quarter turns counterclockwise, then a mirror
    (left-right). Applied to the LR frames so the output needs no display matrix."""

    turns: int = 0
    mirror: bool = False

    def apply(self, image: np.ndarray) -> np.ndarray:
        turned = np.rot90(image, self.turns)
        return turned[:, ::-1] if self.mirror else turned

    def size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of a coded width x height frame once turned."""
        return (height, width) if self.turns % 2 else (width, height)


UPRIGHT = Orientation()


def orientation_from_matrix(matrix: Sequence[int]) -> Orientation | None:
    """The right-angle turn and mirror an FFmpeg display matrix describes; None for other angles.

    The matrix is 3x3 int32 (16.16 fixed point in its first two columns) applied to row vectors:
    a mirror negates column 0 (av_display_matrix_flip) and the rotation is read as
    av_display_rotation_get reads it (counterclockwise). Frames turn as FFmpeg's autorotate turns them.
    """
    a, b, c, d = (float(matrix[i]) / 65536 for i in (0, 1, 3, 4))
    mirror = a * d - b * c < 0
    if mirror:
        a, c = -a, -c
    sx, sy = math.hypot(a, c), math.hypot(b, d)
    if sx == 0 or sy == 0:
        return None
    degrees = -math.degrees(math.atan2(b / sy, a / sx))
    turns = round(degrees / 90)
    if abs(degrees - 90 * turns) > 1:
        return None
    return Orientation(turns % 4, mirror)


def _frame_orientation(frame) -> tuple[Orientation, str | None]:
    """(orientation, note) from a decoded frame's display matrix (FFmpeg attaches the stream's)."""
    from av.sidedata.sidedata import Type

    side = frame.side_data.get(Type.DISPLAYMATRIX)
    if side is None:
        return UPRIGHT, None
    orientation = orientation_from_matrix(np.frombuffer(bytes(side), dtype=np.int32))
    if orientation is None:
        return UPRIGHT, f"the display matrix turns the picture by {frame.rotation} degrees, not a right angle; frames are written as stored"
    return orientation, None


# --- bit depth and chroma -------------------------------------------------------------------

CHROMA_LABELS = {"444": "4:4:4", "422": "4:2:2", "440": "4:4:0", "420": "4:2:0"}
CHROMA_SAMPLES = {"444": 4, "422": 2, "440": 2, "420": 1}  # chroma samples per 4 pixels
DEPTHS = (8, 10, 12)


@dataclass(frozen=True)
class PixelLayout:
    """A planar YUV layout: chroma subsampling ('444', '422', '440', '420') and bits per sample."""

    chroma: str
    depth: int

    @property
    def name(self) -> str:
        return f"yuv{self.chroma}p" + ("" if self.depth == 8 else f"{self.depth}le")

    @property
    def label(self) -> str:
        return f"{self.depth}-bit {CHROMA_LABELS[self.chroma]}"

    def fits(self, width: int, height: int) -> bool:
        """Subsampled chroma needs an even size along each subsampled axis."""
        even_w, even_h = width % 2 == 0, height % 2 == 0
        return {"444": True, "422": even_w, "440": even_h, "420": even_w and even_h}[self.chroma]


def source_layout(fmt) -> PixelLayout:
    """The layout a decoded PyAV VideoFormat carries (RGB as 4:4:4, gray as 4:2:0: no chroma to keep)."""
    components = [c for c in fmt.components if not c.is_alpha] or list(fmt.components)
    depth = max(c.bits for c in components)
    if len(components) < 3:
        chroma = "420"
    elif fmt.is_rgb:
        chroma = "444"
    else:
        chroma = {(16, 16): "444", (8, 16): "422", (16, 8): "440"}.get((fmt.chroma_width(16), fmt.chroma_height(16)), "420")
    return PixelLayout(chroma, depth)


def choose_pixel_format(codec, width: int, height: int, source: PixelLayout, source_name: str) -> tuple[PixelLayout, str | None]:
    """(output layout, note): the input's chroma and depth if the encoder takes them at this size,
    else the closest it takes (chroma first, then depth), with a note saying what changed."""
    names = {f.name for f in (codec.video_formats or [])} or {"yuv420p"}
    wanted = PixelLayout(source.chroma, next((d for d in DEPTHS if d >= source.depth), DEPTHS[-1]))
    chromas = ("444", "422", "420") + (("440",) if wanted.chroma == "440" else ())
    options = [PixelLayout(c, d) for c in chromas for d in DEPTHS]
    options = [o for o in options if o.name in names and o.fits(width, height)]
    if not options:
        raise ElanDeployError(f"{codec.name} cannot encode an odd output size {width}x{height}; use another --scale or --codec libx264")

    def cost(option: PixelLayout) -> tuple[int, ...]:
        chroma_loss = max(0, CHROMA_SAMPLES[wanted.chroma] - CHROMA_SAMPLES[option.chroma])
        depth_loss = max(0, min(source.depth, wanted.depth) - option.depth)
        return (chroma_loss + depth_loss > 0, chroma_loss, depth_loss, CHROMA_SAMPLES[option.chroma], option.depth)

    chosen = min(options, key=cost)
    if cost(chosen)[0]:
        return chosen, f"{codec.name} cannot keep the input's {source.label} ({source_name}); written as {chosen.label} ({chosen.name})"
    return chosen, None


# --- what the container declares against what decodes ---------------------------------------


@dataclass(frozen=True)
class Declared:
    """The video stream's length as the container states it; None where it states nothing."""

    frames: int | None
    seconds: float | None

    def expected_frames(self, rate: Fraction) -> tuple[int, bool] | None:
        """(frames, exact): the declared count, or one estimated from the duration and rate."""
        if self.frames:
            return self.frames, True
        if self.seconds:
            return round(self.seconds * float(rate)), False
        return None


def _tag(metadata: Mapping[str, str], key: str) -> str | None:
    """A Matroska statistics tag, with or without its language suffix (DURATION, DURATION-eng)."""
    return next((v for k, v in metadata.items() if k.upper() == key or k.upper().startswith(key + "-")), None)


def _clock_seconds(text: str) -> float | None:
    """'00:00:04.000000000' -> 4.0."""
    try:
        hours, minutes, seconds = text.strip().split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None


def declared_length(reader, vin) -> Declared:
    """The stream's frame count (MP4/MOV/AVI index, Matroska statistics) and duration (the
    stream's own, a Matroska DURATION tag, or the file's when it holds the video alone)."""
    frames = vin.frames or None
    count = _tag(vin.metadata, "NUMBER_OF_FRAMES")
    if frames is None and count and count.isdigit():
        frames = int(count)
    seconds = float(vin.duration * vin.time_base) if vin.duration else None
    tag = _tag(vin.metadata, "DURATION")
    if seconds is None and tag:
        seconds = _clock_seconds(tag)
    if seconds is None and reader.duration and len(reader.streams) == 1:
        seconds = reader.duration / 1_000_000  # AV_TIME_BASE
    return Declared(frames, seconds)


@dataclass
class Decoded:
    """What actually came out of the decoder."""

    frames: int = 0
    start: float | None = None  # seconds
    end: float = 0.0  # seconds: the last frame's time plus its duration
    discarded: int = 0  # packets the container's edit list trims away (counted in its frame count)
    bad_packets: int = 0
    damaged_frames: int = 0
    stopped: str | None = None  # the read error that ended the stream early

    @property
    def seconds(self) -> float:
        return max(0.0, self.end - (self.start or 0.0))

    def add(self, frame, period: float) -> None:
        at = float(frame.time) if frame.pts is not None and frame.time_base else self.frames * period
        length = float(frame.duration * frame.time_base) if frame.duration and frame.time_base else period
        if self.start is None:
            self.start = at
        self.end = max(self.end, at + length)
        self.frames += 1
        self.damaged_frames += bool(frame.is_corrupt)


def missing(declared: Declared, decoded: Decoded, rate: Fraction) -> str | None:
    """What the decode lacks against the declaration, in one line; None when it is complete."""
    period = 1 / float(rate)
    expected = declared.expected_frames(rate)
    if expected and expected[1]:
        expected = (expected[0] - decoded.discarded, True)
    short = (expected is not None and expected[1] and decoded.frames < expected[0]) or (
        declared.seconds is not None and declared.seconds - decoded.seconds > SHORT_BY_FRAMES * period + 1e-3
    )
    if not (short or decoded.bad_packets or decoded.damaged_frames or decoded.stopped):
        return None
    parts = [f"{decoded.frames} of {'' if expected[1] else '~'}{expected[0]} frames" if expected else f"{decoded.frames} frames"]
    if declared.seconds:
        parts.append(f"{decoded.seconds:.2f} of {declared.seconds:.2f} s")
    if decoded.bad_packets:
        parts.append(f"{decoded.bad_packets} packet(s) did not decode")
    if decoded.damaged_frames:
        parts.append(f"{decoded.damaged_frames} frame(s) decoded with errors")
    if decoded.stopped:
        parts.append(f"reading stopped at an error ({decoded.stopped})")
    return "decoded " + ", ".join(parts)


# --- the transcode --------------------------------------------------------------------------


@dataclass(frozen=True)
class FirstFrame:
    """What the first decoded frame says about the whole stream."""

    width: int
    height: int
    layout: PixelLayout
    format_name: str
    orientation: Orientation
    note: str | None


def probe_first_frame(av, source: Path, vin) -> FirstFrame:
    """Decode one frame (in a separate open, before the output's streams are set up) for its size,
    pixel format and display matrix; the stream header's values where nothing decodes."""
    try:
        with av.open(str(source)) as probe:
            for frame in probe.decode(video=0):  # the first video stream, as `vin` is
                orientation, note = _frame_orientation(frame)
                return FirstFrame(frame.width, frame.height, source_layout(frame.format), frame.format.name, orientation, note)
    except av.error.FFmpegError:
        pass  # the transcode reports the decode error
    ctx = vin.codec_context
    fmt = ctx.format
    layout = source_layout(fmt) if fmt is not None else PixelLayout("420", 8)
    return FirstFrame(ctx.width, ctx.height, layout, fmt.name if fmt is not None else "unknown", UPRIGHT, None)


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
                writer = av.open(str(tmp), mode="w", format=_container_format(av, target))
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
                _set_quality(vout, codec_name, options, width, height, rate)
                audio_out = {}
                for stream in audio_in:
                    try:
                        audio_out[stream.index] = writer.add_stream_from_template(stream)
                    except (av.error.FFmpegError, ValueError) as exc:
                        raise ElanDeployError(
                            f"cannot copy audio ({stream.codec_context.name}) into '{target.suffix}': {exc}; use .mkv"
                        ) from None
                step = _frame_step(av, upscaler, first.orientation, deep=layout.depth > 8)
                decoded = _transcode(av, reader, vin, audio_in, vout, audio_out, writer, step, rate,
                                     expected[0] if expected else None, on_frame, options.allow_partial)
                gap = missing(declared, decoded, rate)
                if gap and not options.allow_partial:
                    raise WorkFailed(f"the video is truncated or damaged: {gap}; nothing was written; {PARTIAL_HINT}")
                notes += [f"'{source.name}' is truncated or damaged: {gap}; '{target.name}' holds what decoded"] if gap else []
    return VideoReport(decoded.frames, time.perf_counter() - start, codec_name, len(audio_in), tuple(notes))


def _set_quality(vout, codec_name: str, options: VideoOptions, width: int, height: int, rate: Fraction) -> None:
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


def _container_format(av, target: Path) -> str | None:
    """The muxer for the target's extension (the temporary file's name must not decide it)."""
    return {".mkv": "matroska", ".webm": "webm", ".mov": "mov", ".mp4": "mp4", ".m4v": "mp4", ".avi": "avi",
            ".ts": "mpegts", ".mpg": "mpeg", ".mpeg": "mpeg", ".flv": "flv", ".wmv": "asf"}.get(target.suffix.lower())


def _frame_step(av, upscaler: Upscaler, orientation: Orientation, deep: bool) -> Callable:
    """decoded frame -> upscaled frame, turned upright. 8-bit outputs go through `upscale_uint8`;
    deeper ones decode to 16-bit RGB and go through the float Upscaler, so no 8-bit rounding."""

    def eight_bit(frame):
        rgb = np.ascontiguousarray(orientation.apply(frame.to_ndarray(format="rgb24")))
        return av.VideoFrame.from_ndarray(np.ascontiguousarray(upscaler.upscale_uint8(rgb)), format="rgb24")

    def sixteen_bit(frame):
        rgb = orientation.apply(frame.to_ndarray(format="rgb48le")).astype(np.float32) / 257.0  # 0..255 as the engine sees it
        hr = upscaler(rgb)
        np.multiply(hr, 257.0, out=hr)
        np.round(hr, out=hr)
        np.clip(hr, 0, 65535, out=hr)
        return av.VideoFrame.from_ndarray(hr.astype(np.uint16), format="rgb48le")

    return sixteen_bit if deep else eight_bit


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
