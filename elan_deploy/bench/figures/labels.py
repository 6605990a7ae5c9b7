"""Label placement for the latency plot: every label readable, none over a marker or a line.

Greedy, in display pixels, on a fixed layout: labels are placed one at a time on rings of
growing radius around their point, at the first spot that overlaps no marker, no drawn line, no
label placed before and no leader line. The figure is never re-laid out afterwards
(no tight_layout), so what was checked here is what is saved.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.backend_bases import RendererBase
    from matplotlib.text import Text

_MARKER_HALF_PX = 8.0
_GAP_PX = 4.0
_RADII_PX = (7, 14, 24, 36, 50, 66, 84, 105, 130, 160, 195, 235, 280, 330, 390, 460)
# Right and left first (labels read sideways), then ever steeper directions.
_ANGLES = (0, 180, 90, 270, 20, 340, 160, 200, 40, 320, 140, 220, 60, 300, 120, 240, 75, 285, 105, 255)


@dataclass
class _Box:
    """A rectangle in display pixels: labels, markers and the axes area are all compared as these."""

    x0: float
    y0: float
    x1: float
    y1: float

    def overlaps(self, other: _Box, gap: float = 0.0) -> bool:
        return not (self.x1 + gap <= other.x0 or other.x1 + gap <= self.x0 or self.y1 + gap <= other.y0 or other.y1 + gap <= self.y0)

    def inside(self, outer: _Box, margin: float) -> bool:
        return self.x0 >= outer.x0 + margin and self.x1 <= outer.x1 - margin and self.y0 >= outer.y0 + margin and self.y1 <= outer.y1 - margin

    def nearest(self, x: float, y: float) -> tuple[float, float]:
        return min(max(x, self.x0), self.x1), min(max(y, self.y0), self.y1)


def _segment_hits(box: _Box, a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether segment a→b passes through `box` (Liang–Barsky clipping)."""
    (x0, y0), (x1, y1) = a, b
    dx, dy = x1 - x0, y1 - y0
    lo, hi = 0.0, 1.0
    for p, q in ((-dx, x0 - box.x0), (dx, box.x1 - x0), (-dy, y0 - box.y0), (dy, box.y1 - y0)):
        if p == 0:
            if q < 0:
                return False
        else:
            t = q / p
            if p < 0:
                lo = max(lo, t)
            else:
                hi = min(hi, t)
            if lo > hi:
                return False
    return True


def _contains(box: _Box, x: float, y: float) -> bool:
    return box.x0 <= x <= box.x1 and box.y0 <= y <= box.y1


def _candidate_boxes(px: float, py: float, w: float, h: float, scale: float) -> Iterator[tuple[_Box, bool]]:
    """Label boxes around a point, nearest first; each with whether it needs a leader line."""
    for i, radius in enumerate(_RADII_PX):
        r = radius * scale
        for angle in _ANGLES:
            c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
            cx, cy = px + c * (r + w / 2), py + s * (r + h / 2)
            yield _Box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), i > 0


class LabelPlacer:
    """Places labels in one axes, one at a time, where they overlap nothing placed before.

    Obstacles are kept in display pixels: every marker, every drawn line (data-coordinate
    polylines), every placed label and every leader line. A label may sit up to `reach` pixels
    from its point (beyond the nearest ring it gets a leader line); `place` returns None when no
    spot is free, and the caller falls back to a short tag.
    """

    def __init__(self, ax: Axes, renderer: RendererBase, marker_xy: Sequence[tuple[float, float]],
                 lines: Sequence[Sequence[tuple[float, float]]] = ()) -> None:
        self.ax, self.renderer = ax, renderer
        self.scale = ax.figure.dpi / 100.0
        area = ax.get_window_extent(renderer)
        self.bounds = _Box(area.x0, area.y0, area.x1, area.y1)
        self.half = _MARKER_HALF_PX * self.scale
        self.markers = [self._marker_box(*ax.transData.transform(xy)) for xy in marker_xy]
        self.labels: list[_Box] = []
        self.segments: list[tuple[tuple[float, float], tuple[float, float]]] = []
        for line in lines:
            vertices = [tuple(ax.transData.transform(xy)) for xy in line]
            self.segments += list(zip(vertices, vertices[1:]))

    def _marker_box(self, px: float, py: float) -> _Box:
        return _Box(px - self.half, py - self.half, px + self.half, py + self.half)

    def _free(self, box: _Box, px: float, py: float, leader: bool, crossing: int) -> bool:
        if not box.inside(self.bounds, 2.0):
            return False
        if any(box.overlaps(other, _GAP_PX) for other in self.labels + self.markers):
            return False
        if any(_segment_hits(box, a, b) for a, b in self.segments):
            return False
        if leader and crossing < 2:  # a leader may cross lines; markers only at level 1, labels only at level 2
            end = box.nearest(px, py)
            crossed = self.labels if crossing == 1 else self.labels + self.markers
            if any(_segment_hits(other, (px, py), end) for other in crossed if not _contains(other, px, py)):
                return False
        return True

    def _find(self, px: float, py: float, w: float, h: float, reach: float, cross_markers: bool) -> tuple[_Box | None, bool]:
        """The nearest free box. If allowed and nothing else is free, a leader may pass other markers (level 1),
        then labels too (level 2: it runs under their white background)."""
        for crossing in (0, 1, 2) if cross_markers else (0,):
            for box, leader in _candidate_boxes(px, py, w, h, self.scale):
                if max(box.x0 - px, px - box.x1, box.y0 - py, py - box.y1) <= reach and self._free(box, px, py, leader, crossing):
                    return box, leader
        return None, False

    def place(self, x: float, y: float, text: str, reach_px: float, cross_markers: bool = False, **style: Any) -> Text | None:
        """The Text artist for `text` near data point (x, y), or None if nowhere within reach is free."""
        artist = self.ax.text(0, 0, text, ha="left", va="bottom", zorder=6,
                              bbox={"boxstyle": "square,pad=0.12", "fc": "white", "ec": "none", "alpha": 0.85}, **style)
        extent = artist.get_window_extent(self.renderer)
        px, py = self.ax.transData.transform((x, y))
        box, leader = self._find(px, py, extent.width, extent.height, reach_px * self.scale, cross_markers)
        if box is None:
            artist.remove()
            return None
        to_data = self.ax.transData.inverted()
        artist.set_position(to_data.transform((box.x0, box.y0)))
        self.labels.append(box)
        if leader:
            end = box.nearest(px, py)
            self.segments.append(((px, py), end))
            ex, ey = to_data.transform(end)
            self.ax.plot([x, ex], [y, ey], color="#777", lw=0.7, zorder=2)
        return artist

