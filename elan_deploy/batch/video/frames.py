"""What happens to each decoded frame: turned upright as a player would show it, then upscaled.

A display matrix is applied to the pixels, as still images apply their EXIF orientation, so the
output needs no matrix and is upright in every player and container.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from elan_deploy.upscale import Upscaler


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


def frame_step(av, upscaler: Upscaler, orientation: Orientation, deep: bool) -> Callable:
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
