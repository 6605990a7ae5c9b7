"""The benchmark's two pictures, for readers who would rather look than read the tables.

`latency_vs_psnr.png` puts every latency cell at its p50 against its dataset Y-PSNR, marks the
Pareto front (the fastest cell for each quality level) and keeps every label readable: labels
are placed one by one where they overlap no other label, marker or line, and a cell too crowded
for its label gets a number listed in a key beside the plot. Cells without
dataset quality (torch.compile recompiles for every image size) sit on a strip under the plot,
on the same latency axis, with their fidelity to torch FP32.

`crops.png` shows bicubic, the FP32 reference, the chosen engines and HR on the patch where a
difference can be seen (most HR detail, weighted toward where the engines differ most from the
reference), with each engine's |engine − reference| amplified so quantization loss is visible.

The choices (Pareto front, crop box, amplification) are pure functions, tested without drawing.
Drawing uses matplotlib (the [plot] extra) without pyplot, so no global state is touched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from elan_deploy.bench.matrix import row_label
from elan_deploy.fileio import atomic_path
from elan_deploy.imaging import imresize, rgb_to_y

PLOT_EXTRA = "matplotlib is not installed; pip install 'elan-deploy[plot]'"
REFERENCE_CELL = "torch fp32"
QUALITY_TIE_DB = 0.001  # a slower cell joins the Pareto front only if it is better by more than this
CROP_SIZE = 96  # HR pixels; shown about 3x enlarged
LABEL_REACH_PX = 150  # a label farther than this from its point would be hard to match: the cell gets a number
KEY_WIDTH_IN = 3.6  # room for the key of numbered cells, right of the plot
KEY_OFFSET_IN = 0.95  # past the right-hand Δ dB axis

RUNTIME_COLOURS = {
    "torch": "#7f7f7f", "torch-compile": "#222222", "onnxruntime": "#1f77b4", "openvino": "#8e44ad",
    "tensorrt": "#2ca02c", "coreml": "#ff7f0e",
}
PRECISION_MARKERS = {"fp32": "o", "fp16": "s", "bf16": "D", "int8": "^"}


def _matplotlib_missing() -> str | None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return PLOT_EXTRA
    return None


def _new_figure(width_in: float, height_in: float, dpi: int):
    """A figure on its own Agg canvas: no pyplot, no global backend switch, nothing to close."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _save_png(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=fig.dpi)


# --------------------------------------------------------------------------------------------
# latency_vs_psnr.png
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CellPoint:
    """One latency cell at the main shape, with its quality if it has any."""

    cell: str
    runtime: str
    precision: str
    precision_used: str | None
    p50_ms: float
    psnr: float | None  # dataset Y-PSNR; None for latency-only cells
    fidelity_psnr: float | str | None  # PSNR against torch FP32 output ("inf" = identical)

    @property
    def label(self) -> str:
        used = self.precision_used
        ran_as = f" (ran {used})" if used and not used.startswith(self.precision) else ""
        return self.cell + ran_as


def cell_points(doc: dict[str, Any], main_shape: str, dataset: str) -> list[CellPoint]:
    """Every latency cell at `main_shape`, in document order, with its `dataset` quality if measured."""
    quality = {row_label(r): r for r in doc["rows"] if r.get("kind") == "quality" and r.get("dataset") == dataset}
    points = []
    for row in doc["rows"]:
        if row.get("kind") != "latency" or row.get("shape") != main_shape or not row.get("p50_ms"):
            continue
        label = row_label(row)
        q = quality.get(label, {})
        points.append(CellPoint(
            cell=label, runtime=row["runtime"], precision=row["precision"],
            precision_used=row.get("precision_used") or q.get("precision_used"), p50_ms=float(row["p50_ms"]),
            psnr=q.get("psnr"), fidelity_psnr=q.get("fidelity_psnr", row.get("latency_input_fidelity_psnr")),
        ))
    return points


def pareto_front(points: Sequence[tuple[str, float, float]], tie_db: float = QUALITY_TIE_DB) -> list[str]:
    """Names of the (name, latency, quality) points that no other point beats, fastest first.

    Walking from the fastest cell up, a cell joins the front only if it is better than every
    faster cell by more than `tie_db`: paying latency for a few ten-thousandths of a dB is no
    trade anyone makes, and PSNR is reported to 4 decimals.
    """
    front: list[str] = []
    best = -math.inf
    for name, _, quality in sorted(points, key=lambda p: (p[1], -p[2])):
        if quality > best + tie_db:
            front.append(name)
            best = quality
    return front


@dataclass
class ScatterFigure:
    """The drawn figure and what a test needs to check it."""

    fig: Any
    labels: dict[str, Any]  # cell -> matplotlib Text
    markers: dict[str, tuple[Any, float, float]]  # cell -> (axes, x, y) of its marker
    front: list[str]
    strip: list[str]  # cells without dataset quality, drawn under the plot
    key: dict[str, int] = field(default_factory=dict)  # cells too crowded for a label: their number in the key


def _machine_line(doc: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    m = doc["machine"]
    cpu = m.get("cpu", "unknown CPU")
    if m.get("cpu_id"):
        cpu += f" ({m['cpu_id']})"
    isa = ", ".join(m.get("isa") or []) or "no SIMD flags read"
    threads = sorted({r["threads"] for r in rows if r.get("kind") == "latency" and r.get("threads")})
    thread_text = f" · {'/'.join(map(str, threads))} thread{'s' if threads != [1] else ''}" if threads else ""
    return f"{cpu} · {m.get('cores', '?')} cores · ISA: {isa}{thread_text}"


def _output_size(main_shape: str, rows: list[dict[str, Any]]) -> str:
    """`1x3x180x320 → 1280x720` when the scale can be read from the model name (`…-x4`)."""
    try:
        _, _, h, w = (int(v) for v in main_shape.split("x"))
        scale = int(str(rows[0]["model"]).rsplit("x", 1)[1])
    except (ValueError, IndexError, KeyError):
        return main_shape
    return f"{main_shape} → {w * scale}x{h * scale}"


def _baseline(by_cell: dict[str, CellPoint]) -> CellPoint | None:
    """The cell speed-ups are quoted against: the fastest torch.compile cell (the headline), else PyTorch eager FP32."""
    compiled = [p for label, p in by_cell.items() if label.startswith("torch-compile ") and p.p50_ms]
    if compiled:
        return min(compiled, key=lambda p: p.p50_ms)
    return by_cell.get("torch fp32")


def _label_text(p: CellPoint, baseline: CellPoint | None) -> str:
    parts = [p.label]
    if baseline is not None:
        parts.append("baseline" if p is baseline else f"{baseline.p50_ms / p.p50_ms:.2f}×")
    if p.psnr is None:
        fid = p.fidelity_psnr
        parts.append("fidelity " + ("∞" if fid == "inf" else f"{fid:.1f} dB" if isinstance(fid, (int, float)) else "not measured"))
    return " · ".join(parts)


def _scatter_marker(axes, p: CellPoint, y: float, on_front: bool) -> None:
    axes.scatter(p.p50_ms, y, s=90 if on_front else 45, marker=PRECISION_MARKERS.get(p.precision, "o"),
                 color=RUNTIME_COLOURS.get(p.runtime, "#444"), edgecolors="black" if on_front else "none",
                 linewidths=1.4, zorder=4)


def _quality_axes(ax, rated: list[CellPoint], dataset: str) -> None:
    """PSNR on the left, Δ dB against the reference cell on the right, ticks fine enough for 0.001 dB."""
    from matplotlib import ticker

    qs = [p.psnr for p in rated]
    span = max(max(qs) - min(qs), 0.004)
    ax.set_ylim(min(qs) - 0.2 * span, max(qs) + 0.3 * span)  # headroom: fp32 cells crowd the top
    decimals = max(2, math.ceil(-math.log10(span)) + 1)
    ax.yaxis.set_major_formatter(ticker.FormatStrFormatter(f"%.{decimals}f"))
    ax.set_ylabel(f"{dataset} Y-PSNR (dB)")
    reference = next((p.psnr for p in rated if p.cell == REFERENCE_CELL), None)
    if reference is not None:
        right = ax.secondary_yaxis("right", functions=(lambda q: q - reference, lambda d: d + reference))
        right.set_ylabel(f"Δ dB against {REFERENCE_CELL}")
        right.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:+.{max(3, decimals - 1)}f}".replace("-", "−")))


def _latency_axis(ax, points: list[CellPoint], grid_axis: str) -> None:
    from matplotlib import ticker

    latencies = [p.p50_ms for p in points]
    ax.set_xscale("log")
    ax.set_xlim(min(latencies) / 1.3, max(latencies) * 1.3)
    ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 3.0, 5.0, 7.0)))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.grid(True, which="major", axis=grid_axis, alpha=0.3)


def scatter_figure(doc: dict[str, Any], main_shape: str, dataset: str) -> ScatterFigure | str:
    """Draw latency against quality; returns the figure, or why it cannot be drawn."""
    if (missing := _matplotlib_missing()) is not None:
        return missing
    from matplotlib.lines import Line2D

    points = cell_points(doc, main_shape, dataset)
    if not points:
        return f"no cell has latency at {main_shape}"
    rated = [p for p in points if p.psnr is not None]
    strip = [p for p in points if p.psnr is None]
    front = pareto_front([(p.cell, p.p50_ms, p.psnr) for p in rated])
    by_cell = {p.cell: p for p in points}
    baseline = _baseline(by_cell)

    # Fixed layout (no tight_layout later): label boxes checked now are the boxes saved.
    fig = _new_figure(11.5, 7.0 if rated else 4.2, 110)
    ratios = [5.0, 1.0] if rated and strip else [1.0]
    grid = fig.add_gridspec(len(ratios), 1, height_ratios=ratios, hspace=0.14, left=0.08, right=0.90,
                            top=0.87 if rated else 0.78, bottom=0.17 if rated else 0.27)
    ax = fig.add_subplot(grid[0]) if rated else None
    low = (fig.add_subplot(grid[-1], sharex=ax) if ax is not None else fig.add_subplot(grid[0])) if strip else None
    markers: dict[str, tuple[Any, float, float]] = {}
    staircase: list[tuple[float, float]] = []
    if ax is not None:
        _latency_axis(ax, points, "both")
        _quality_axes(ax, rated, dataset)
        for p in rated:
            _scatter_marker(ax, p, p.psnr, p.cell in front)
            markers[p.cell] = (ax, p.p50_ms, p.psnr)
        for cell in front:  # fastest for each quality level: flat until the next front cell, then up
            if staircase:
                staircase.append((by_cell[cell].p50_ms, staircase[-1][1]))
            staircase.append((by_cell[cell].p50_ms, by_cell[cell].psnr))
        if len(staircase) > 1:
            ax.plot(*zip(*staircase), color="#d62728", lw=1.6, alpha=0.8, zorder=3)
    if low is not None:
        low.set_ylim(-1, 1)
        low.set_yticks([])
        _latency_axis(low, points, "x")
        for p in strip:
            _scatter_marker(low, p, 0.0, False)
            markers[p.cell] = (low, p.p50_ms, 0.0)
        low.set_ylabel(f"no {dataset}\nPSNR", rotation=0, ha="right", va="center", fontsize=8)
        why = "torch.compile recompiles for every image size" if any(p.runtime == "torch-compile" for p in strip) else "not measured"
        low.set_title(f"latency only — no {dataset} PSNR ({why}); fidelity = PSNR against {REFERENCE_CELL}'s output "
                      f"on the latency input", fontsize=8, loc="left", color="#333")
        if ax is not None:
            ax.tick_params(labelbottom=False)
    if baseline is not None:
        for axes in (a for a in (ax, low) if a is not None):
            axes.axvline(baseline.p50_ms, color="#222", ls="--", lw=1.0, alpha=0.7, zorder=1)
    bottom_axes = low if low is not None else ax
    bottom_axes.set_xlabel(f"p50 latency at {_output_size(main_shape, doc['rows'])} (ms, log scale)")

    title = "latency against quality" if rated else f"latency (no cell has {dataset} quality)"
    fig.suptitle(f"{doc['rows'][0]['model']}: {title}", fontsize=13, y=0.975)
    fig.text(0.5, 0.915 if rated else 0.86, _machine_line(doc, doc["rows"]), ha="center", fontsize=9, color="#333")
    handles = []
    if front:
        handles.append(Line2D([], [], color="#d62728", lw=1.6, marker="o", mfc="white", mec="black", mew=1.4,
                              label=f"Pareto front: the fastest cell for each quality level (bold labels; gains ≤ "
                                    f"{QUALITY_TIE_DB:g} dB count as ties)"))
    if baseline is not None:
        handles.append(Line2D([], [], color="#222", ls="--", lw=1.0,
                              label=f"{baseline.cell} p50 = {baseline.p50_ms:.4g} ms; the ×-figure in each label is that "
                                    f"cell's speed-up over it"))
    if handles:
        fig.legend(handles=handles, loc="lower center", fontsize=8, frameon=False, bbox_to_anchor=(0.5, 0.0))

    labels, key = _label_cells(fig, rated, strip, front, markers, staircase, lambda p: _label_text(p, baseline))
    if key:
        _widen_for_key(fig, grid)
        lines = [f"{number}  {_label_text(by_cell[cell], baseline)}" for cell, number in key.items()]
        top = bottom_axes.get_position().y1 if ax is None else ax.get_position().y1
        fig.text(grid.right + KEY_OFFSET_IN / fig.get_figwidth(), top, "Numbered cells (too close together to label)\n"
                 + "\n".join(lines), fontsize=8, va="top", ha="left", linespacing=1.5)
    return ScatterFigure(fig, labels, markers, front, [p.cell for p in strip], key)


def _label_cells(fig, rated: list[CellPoint], strip: list[CellPoint], front: list[str],
                 markers: dict[str, tuple[Any, float, float]], staircase: list[tuple[float, float]],
                 text_for) -> tuple[dict[str, Any], dict[str, int]]:
    """Label every cell; a cell whose label finds no free spot near it gets a number for the key."""
    renderer = fig.canvas.get_renderer()
    placers: dict[Any, _LabelPlacer] = {}
    for axes in {a for a, _, _ in markers.values()}:
        lines = [staircase] if any(a is axes and c in front for c, (a, _, _) in markers.items()) else []
        placers[axes] = _LabelPlacer(axes, renderer, [(x, y) for a, x, y in markers.values() if a is axes], lines)
    order = sorted(rated, key=lambda p: (p.cell not in front, p.p50_ms)) + strip  # the front gets the best spots
    labels: dict[str, Any] = {}
    key: dict[str, int] = {}
    for p in order:
        axes, x, y = markers[p.cell]
        bold = "bold" if p.cell in front else "normal"
        text = placers[axes].place(x, y, text_for(p), LABEL_REACH_PX, fontsize=8, fontweight=bold)
        if text is None:  # too many cells in one spot: a number here, the label in the key
            key[p.cell] = len(key) + 1
            text = placers[axes].place(x, y, str(key[p.cell]), math.inf, cross_markers=True, fontsize=8, fontweight="bold")
        if text is None:  # nothing free anywhere: on its marker rather than lost
            text = axes.text(x, y, str(key[p.cell]), fontsize=8, fontweight="bold", ha="center", va="center", zorder=6)
        labels[p.cell] = text
    return labels, key


def _widen_for_key(fig, grid) -> None:
    """Add room for the key on the right without moving or resizing the axes (placed labels stay valid)."""
    width = fig.get_figwidth()
    left_in, right_in = grid.left * width, grid.right * width
    fig.set_size_inches(width + KEY_WIDTH_IN, fig.get_figheight())
    grid.update(left=left_in / (width + KEY_WIDTH_IN), right=right_in / (width + KEY_WIDTH_IN))
    for axes in fig.axes:  # GridSpec.update moves only pyplot's axes
        if (spec := axes.get_subplotspec()) is not None and spec.get_gridspec() is grid:
            axes.set_position(spec.get_position(fig))


def write_scatter(doc: dict[str, Any], path: Path, main_shape: str, dataset: str) -> str | None:
    """Write latency_vs_psnr.png; returns why it was not drawn, if so."""
    drawn = scatter_figure(doc, main_shape, dataset)
    if isinstance(drawn, str):
        return drawn
    _save_png(drawn.fig, path)
    return None


# Label placement: greedy, in display pixels, on a fixed layout (no tight_layout afterwards, so
# what was checked here is what is saved).

_MARKER_HALF_PX = 8.0
_GAP_PX = 4.0
_RADII_PX = (7, 14, 24, 36, 50, 66, 84, 105, 130, 160, 195, 235, 280, 330, 390, 460)
# Right and left first (labels read sideways), then ever steeper directions.
_ANGLES = (0, 180, 90, 270, 20, 340, 160, 200, 40, 320, 140, 220, 60, 300, 120, 240, 75, 285, 105, 255)


@dataclass
class _Box:
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


def _candidate_boxes(px: float, py: float, w: float, h: float, scale: float):
    """Label boxes around a point, nearest first; each with whether it needs a leader line."""
    for i, radius in enumerate(_RADII_PX):
        r = radius * scale
        for angle in _ANGLES:
            c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
            cx, cy = px + c * (r + w / 2), py + s * (r + h / 2)
            yield _Box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), i > 0


class _LabelPlacer:
    """Places labels in one axes, one at a time, where they overlap nothing placed before.

    Obstacles are kept in display pixels: every marker, every drawn line (data-coordinate
    polylines), every placed label and every leader line. A label may sit up to `reach` pixels
    from its point (beyond the nearest ring it gets a leader line); `place` returns None when no
    spot is free, and the caller falls back to a short tag.
    """

    def __init__(self, ax, renderer, marker_xy: Sequence[tuple[float, float]],
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

    def place(self, x: float, y: float, text: str, reach_px: float, cross_markers: bool = False, **style: Any):
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


# --------------------------------------------------------------------------------------------
# crops.png
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CropBox:
    top: int
    left: int
    size: int

    def of(self, image: np.ndarray) -> np.ndarray:
        return image[self.top : self.top + self.size, self.left : self.left + self.size]


@dataclass(frozen=True)
class CropSample:
    """One dataset image with every cell's output for it (uint8 HxWx3 at HR size).

    The bicubic panel is made from `lr` (MATLAB-compatible bicubic) only for the image that is
    shown, unless a ready-made `bicubic` is given.
    """

    name: str
    hr: np.ndarray
    outputs: dict[str, np.ndarray]
    lr: np.ndarray | None = None
    bicubic: np.ndarray | None = None

    def bicubic_at(self, scale: int) -> np.ndarray | None:
        if self.bicubic is not None:
            return self.bicubic
        return imresize(self.lr, scale=scale) if self.lr is not None else None


def detail_energy(image: np.ndarray) -> np.ndarray:
    """Squared luma gradient per pixel: large on texture and edges, ~0 on smooth skin or sky."""
    y = rgb_to_y(image) if image.ndim == 3 else image.astype(np.float64)
    energy = np.zeros(y.shape, dtype=np.float64)
    energy[:, :-1] += np.diff(y, axis=1) ** 2
    energy[:-1, :] += np.diff(y, axis=0) ** 2
    return energy


def difference_map(outputs: Sequence[np.ndarray], reference: np.ndarray) -> np.ndarray:
    """Per pixel, the largest |engine − reference| over engines and channels (8-bit levels)."""
    ref = reference.astype(np.int16)
    diff = np.zeros(reference.shape[:2], dtype=np.int16)
    for out in outputs:
        np.maximum(diff, np.abs(out.astype(np.int16) - ref).max(axis=-1), out=diff)
    return diff


def window_means(values: np.ndarray, size: int) -> np.ndarray:
    """Mean of `values` over every size×size window; element [t, l] is the window at top t, left l."""
    padded = np.zeros((values.shape[0] + 1, values.shape[1] + 1), dtype=np.float64)
    padded[1:, 1:] = np.cumsum(np.cumsum(values, axis=0), axis=1)
    sums = padded[size:, size:] - padded[:-size, size:] - padded[size:, :-size] + padded[:-size, :-size]
    return sums / (size * size)


def choose_crop_among(hrs: Sequence[np.ndarray], size: int = CROP_SIZE,
                      differences: Sequence[np.ndarray | None] | None = None) -> tuple[int, CropBox]:
    """(image index, box) of the window that tells most across several images.

    Score = HR detail (mean squared luma gradient, normalised to the best window over all images)
    × (1 + the engines' difference from the reference, normalised the same way): detail decides,
    and among detailed windows the one where the engines lose most wins, up to twice the weight.
    """
    size = min([size] + [min(h.shape[:2]) for h in hrs])
    details = [window_means(detail_energy(h), size) for h in hrs]
    diffs = [window_means(d.astype(np.float64), size) if d is not None else None for d in (differences or [None] * len(hrs))]
    top_detail = max(float(d.max()) for d in details) or 1.0
    top_diff = max((float(d.max()) for d in diffs if d is not None), default=0.0) or 1.0
    best = (-1.0, 0, CropBox(0, 0, size))
    for index, (detail, diff) in enumerate(zip(details, diffs)):
        score = detail / top_detail * (1.0 + (diff / top_diff if diff is not None else 0.0))
        t, l = np.unravel_index(int(np.argmax(score)), score.shape)
        if score[t, l] > best[0]:
            best = (float(score[t, l]), index, CropBox(int(t), int(l), size))
    return best[1], best[2]


def choose_crop(hr: np.ndarray, size: int = CROP_SIZE, outputs: Sequence[np.ndarray] = (),
                reference: np.ndarray | None = None) -> CropBox:
    """The size×size box of one HR image that tells most (see `choose_crop_among`)."""
    difference = difference_map(outputs, reference) if outputs and reference is not None else None
    return choose_crop_among([hr], size, [difference])[1]


def amplification(errors: Sequence[np.ndarray]) -> int:
    """A power of two that brings the 99th percentile of the errors near full scale (1..64)."""
    values = np.concatenate([e.ravel() for e in errors]) if errors else np.zeros(1)
    p99 = max(float(np.percentile(values, 99)), 1.0)
    return int(min(64, max(1, 2 ** math.floor(math.log2(255.0 / p99)))))


def crop_engines(doc: dict[str, Any], main_shape: str, dataset: str, most: int = 3) -> list[str]:
    """The engines worth a close look: the reduced-precision cells on the Pareto front (the ones a
    user would deploy), fastest first, and the most accurate INT8 cell if none of them is INT8.
    Without a front, the most accurate cell other than the reference."""
    rated = [p for p in cell_points(doc, main_shape, dataset) if p.psnr is not None]
    precision = {p.cell: p.precision for p in rated}
    engines = [c for c in pareto_front([(p.cell, p.p50_ms, p.psnr) for p in rated]) if precision[c] != "fp32"][:most]
    quality = [r for r in doc["rows"] if r.get("kind") == "quality" and r.get("dataset") == dataset and row_label(r) != REFERENCE_CELL]
    ranked = sorted(quality, key=lambda r: -r["psnr"])
    by_psnr = [row_label(r) for r in ranked]
    int8 = [row_label(r) for r in ranked if r["precision"] == "int8"]
    if int8 and not any(precision[c] == "int8" for c in engines):
        engines = engines[: most - 1] + int8[:1]
    return engines or by_psnr[:1]


@dataclass
class CropFigure:
    fig: Any
    sample: str
    box: CropBox
    amplify: int
    engines: list[str]


def crop_figure(samples: Sequence[CropSample], scale: int, engines: Sequence[str], reference: str = REFERENCE_CELL,
                size: int = CROP_SIZE, box: CropBox | None = None, image_index: int | None = None) -> CropFigure | str:
    """bicubic | reference | engines | HR on the chosen crop, each engine's amplified error under it."""
    if (missing := _matplotlib_missing()) is not None:
        return missing
    from matplotlib.patches import Rectangle

    samples = [s for s in samples if reference in s.outputs]
    if not samples:
        return f"no image has a {reference} output"
    engines = [e for e in engines if e != reference and all(e in s.outputs for s in samples)]
    for s in samples:
        if any(s.outputs[c].shape != s.hr.shape for c in [reference, *engines]):
            raise ValueError(f"{s.name}: every output must have the HR shape {s.hr.shape} to be compared pixel by pixel")
    chosen = box is None
    if box is None:
        differences = [difference_map([s.outputs[e] for e in engines], s.outputs[reference]) if engines else None for s in samples]
        index, box = choose_crop_among([s.hr for s in samples], size, differences)
    else:
        index = image_index or 0
    sample = samples[index]
    ref = sample.outputs[reference]
    errors = {e: np.abs(box.of(sample.outputs[e]).astype(np.int16) - box.of(ref).astype(np.int16)).max(axis=-1) for e in engines}
    amplify = amplification(list(errors.values()))

    panels: list[tuple[str, np.ndarray]] = []
    if (bicubic := sample.bicubic_at(scale)) is not None:
        panels.append(("bicubic", bicubic))
    panels += [(reference + " (reference)", ref)] + [(e, sample.outputs[e]) for e in engines] + [("HR", sample.hr)]
    columns = 1 + len(panels)
    rows = 2 if engines else 1
    height = 2.6 * rows + 0.55
    fig = _new_figure(2.35 * columns + 0.3, height, 110)
    grid = fig.add_gridspec(rows, columns, left=0.015, right=0.985, top=1 - 0.55 / height, bottom=0.035 if engines else 0.02,
                            wspace=0.07, hspace=0.2)

    overview = fig.add_subplot(grid[0, 0])
    overview.imshow(sample.hr)
    overview.add_patch(Rectangle((box.left - 0.5, box.top - 0.5), box.size, box.size, fill=False, ec="#ff2020", lw=1.8))
    overview.set_title(f"{sample.name}: crop at x={box.left}, y={box.top}", fontsize=8)
    _no_ticks(overview)
    for column, (caption, image) in enumerate(panels, start=1):
        axes = fig.add_subplot(grid[0, column])
        axes.imshow(box.of(image), interpolation="nearest")
        axes.set_title(caption, fontsize=9, fontweight="bold" if caption == "HR" else "normal")
        _no_ticks(axes)
    first_engine_column = 1 + (bicubic is not None) + 1
    for offset, engine in enumerate(engines):
        axes = fig.add_subplot(grid[1, first_engine_column + offset])
        _no_ticks(axes)
        err = errors[engine]
        image = axes.imshow(err, cmap="magma", vmin=0, vmax=255.0 / amplify, interpolation="nearest")
        axes.set_title(f"|{engine} − {reference}| ×{amplify}", fontsize=8)
        axes.set_xlabel(f"mean {err.mean():.2f}, max {int(err.max())} levels", fontsize=8)
    if engines:
        holder = fig.add_subplot(grid[1, columns - 1])  # under HR: the error maps' scale, next to them
        holder.axis("off")
        bar = holder.inset_axes((0.0, 0.0, 0.07, 1.0))
        colorbar = fig.colorbar(image, cax=bar)
        colorbar.set_label(f"|difference| in 8-bit levels\n(×{amplify}: ≥ {255 / amplify:.3g} levels at full brightness)", fontsize=8)
        colorbar.ax.tick_params(labelsize=7)
        note = fig.add_subplot(grid[1, 0:first_engine_column])
        note.axis("off")
        note.text(0.0, 0.97, _crop_note(box, reference, amplify, chosen), fontsize=8, va="top", ha="left",
                  transform=note.transAxes, linespacing=1.4)
    if not chosen:
        what = "a fixed patch"
    elif engines:
        what = "the HR patch with the most detail where the engines differ most"
    else:
        what = "the HR patch with the most detail"
    title = f"{sample.name}: {what}, {box.size}×{box.size} pixels enlarged"
    if engines:
        title += f"; below, each engine's difference from {reference} ×{amplify}"
    fig.suptitle(title, fontsize=10, y=1 - 0.12 / height)
    return CropFigure(fig, sample.name, box, amplify, list(engines))


def _no_ticks(axes) -> None:
    axes.set_xticks([])
    axes.set_yticks([])


def _crop_note(box: CropBox, reference: str, amplify: int, chosen: bool) -> str:
    where = (f"Where: of every {box.size}×{box.size} window in the dataset, the one with\n"
             f"the most HR detail (squared luma gradient), weighted toward\n"
             f"where the engines' outputs differ most from {reference}." if chosen else "Where: the box the caller gave.")
    return (f"{where}\n\n"
            f"Error maps: |engine − {reference}| per pixel, the largest\n"
            f"of R, G, B, in 8-bit levels, amplified ×{amplify}. Black: identical;\n"
            f"bright: where reduced precision changed the picture.")


def write_crop_figure(samples: Sequence[CropSample], path: Path, scale: int, engines: Sequence[str],
                      reference: str = REFERENCE_CELL, size: int = CROP_SIZE) -> str | None:
    """Write crops.png; returns why it was not drawn, if so."""
    drawn = crop_figure(samples, scale, engines, reference, size)
    if isinstance(drawn, str):
        return drawn
    _save_png(drawn.fig, path)
    return None


def write_crops(panels: list[tuple[str, np.ndarray]], path: Path, box: tuple[int, int, int] | None = None) -> str | None:
    """The earlier call: (caption, uint8 HxWx3 at HR size) panels named "bicubic", "torch fp32",
    engines and "HR" on one image. `box` (top, left, size) fixes the crop; without it the crop is chosen."""
    images = dict(panels)
    if "HR" not in images or REFERENCE_CELL not in images:
        raise ValueError(f"write_crops needs panels named 'HR' and '{REFERENCE_CELL}', got {list(images)}")
    engines = [c for c in images if c not in ("HR", "bicubic", REFERENCE_CELL)]
    outputs = {c: images[c] for c in engines + [REFERENCE_CELL]}
    sample = CropSample("image", images["HR"], outputs, bicubic=images.get("bicubic"))
    drawn = crop_figure([sample], 1, engines, REFERENCE_CELL, box=CropBox(*box) if box is not None else None)
    if isinstance(drawn, str):
        return drawn
    _save_png(drawn.fig, path)
    return None
