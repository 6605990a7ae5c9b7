"""Matplotlib set-up shared by every picture the toolkit writes (the [plot] extra).

Figures are drawn on their own Agg canvas, never through pyplot: pyplot keeps a global list of
open figures and a process-wide backend, which a library called from a server, a notebook or a
test run must not switch or leak into. Without pyplot there is nothing to close afterwards.

PNGs are written through `fileio.atomic_path`, so a reader never finds half a picture, and at
the figure's own dpi, so a user's matplotlibrc (`savefig.dpi`) cannot change what is written.
Matplotlib is imported only when a figure is made: it is an optional dependency.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from elan_deploy.fileio import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PLOT_EXTRA = "matplotlib is not installed; pip install 'elan-deploy[plot]'"
FIGURE_DPI = 110  # every figure's resolution: text at 8-9 pt stays legible in a Markdown viewer


def matplotlib_missing() -> str | None:
    """None when matplotlib can be imported, else why nothing can be drawn."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return PLOT_EXTRA
    return None


def new_figure(width_in: float, height_in: float, dpi: int = FIGURE_DPI) -> Figure:
    """A figure on its own Agg canvas: no pyplot, no global backend switch, nothing to close."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: Path) -> None:
    """Write `fig` to `path` as PNG at the figure's dpi, atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=fig.dpi)
