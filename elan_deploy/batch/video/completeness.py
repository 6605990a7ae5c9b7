"""Whether a decode delivered what the container declares, so a truncated or damaged file is
reported rather than silently written as a shorter clip."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from elan_deploy.batch.video.probe import Declared

SHORT_BY_FRAMES = 1.5  # a decode ending this many frame periods before the declared duration is short


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
