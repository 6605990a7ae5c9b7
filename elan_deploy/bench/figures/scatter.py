"""`latency_vs_psnr.png`: every latency cell at its p50 against its dataset Y-PSNR.

The Pareto front (the fastest cell for each quality level) is marked, and every label stays
readable: labels are placed one by one where they overlap no other label, marker or line
(`labels`), and a cell too crowded for its label gets a number listed in a key beside the plot.
Cells without dataset quality (torch.compile recompiles for every image size) sit on a strip
under the plot, on the same latency axis, with their fidelity to torch FP32.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from elan_deploy.bench.figures.cells import QUALITY_TIE_DB, REFERENCE_CELL, CellPoint, cell_points, pareto_front
from elan_deploy.bench.figures.labels import LabelPlacer
from elan_deploy.plotting import FIGURE_DPI, matplotlib_missing, new_figure, save_png

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.gridspec import GridSpec

LABEL_REACH_PX = 150  # a label farther than this from its point would be hard to match: the cell gets a number
KEY_WIDTH_IN = 3.6  # room for the key of numbered cells, right of the plot
KEY_OFFSET_IN = 0.95  # past the right-hand Δ dB axis

RUNTIME_COLOURS = {
    "torch": "#7f7f7f", "torch-compile": "#222222", "onnxruntime": "#1f77b4", "openvino": "#8e44ad",
    "tensorrt": "#2ca02c", "coreml": "#ff7f0e", "ncnn": "#d62728",
}
PRECISION_MARKERS = {"fp32": "o", "fp16": "s", "bf16": "D", "int8": "^"}


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


def _scatter_marker(axes: Axes, p: CellPoint, y: float, on_front: bool) -> None:
    axes.scatter(p.p50_ms, y, s=90 if on_front else 45, marker=PRECISION_MARKERS.get(p.precision, "o"),
                 color=RUNTIME_COLOURS.get(p.runtime, "#444"), edgecolors="black" if on_front else "none",
                 linewidths=1.4, zorder=4)


def _quality_axes(ax: Axes, rated: list[CellPoint], dataset: str) -> None:
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


def _latency_axis(ax: Axes, points: list[CellPoint], grid_axis: str) -> None:
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
    if (missing := matplotlib_missing()) is not None:
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
    fig = new_figure(11.5, 7.0 if rated else 4.2, FIGURE_DPI)
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


def _label_cells(fig: Figure, rated: list[CellPoint], strip: list[CellPoint], front: list[str],
                 markers: dict[str, tuple[Any, float, float]], staircase: list[tuple[float, float]],
                 text_for: Callable[[CellPoint], str]) -> tuple[dict[str, Any], dict[str, int]]:
    """Label every cell; a cell whose label finds no free spot near it gets a number for the key."""
    renderer = fig.canvas.get_renderer()
    placers: dict[Any, LabelPlacer] = {}
    for axes in {a for a, _, _ in markers.values()}:
        lines = [staircase] if any(a is axes and c in front for c, (a, _, _) in markers.items()) else []
        placers[axes] = LabelPlacer(axes, renderer, [(x, y) for a, x, y in markers.values() if a is axes], lines)
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


def _widen_for_key(fig: Figure, grid: GridSpec) -> None:
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
    save_png(drawn.fig, path)
    return None
