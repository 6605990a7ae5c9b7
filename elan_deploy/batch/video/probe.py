"""Facts about the input stream read before the transcode: size, pixel layout, display matrix and
the length the container declares.

The first frame is decoded in a separate open because only a decoded frame carries the display
matrix and the true pixel format; the declared length is what the decode is checked against.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from elan_deploy.batch.video.frames import UPRIGHT, Orientation, orientation_from_matrix
from elan_deploy.batch.video.pixels import PixelLayout, source_layout


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
