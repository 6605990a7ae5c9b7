"""Error against depth: each engine's per-tensor PSNR along the reference graph (matplotlib, optional).

Drawn through `elan_deploy.plotting` (an Agg figure of its own, no pyplot), so running the diff
from a library or a notebook switches no global backend and leaves no open figure behind.
"""

from __future__ import annotations

import math
from pathlib import Path

from elan_deploy.diff.layers import LayerReport
from elan_deploy.plotting import FIGURE_DPI, matplotlib_missing, new_figure, save_png

IDENTICAL_DB = 160.0  # where identical tensors (infinite PSNR) are drawn


def plot_available() -> str | None:
    """None when matplotlib is installed, else the reason the plot is not drawn."""
    if matplotlib_missing() is not None:
        return "matplotlib is not installed (pip install 'elan-deploy[plot]'); no layer plot was drawn"
    return None


def plot_layers(reports: list[LayerReport], threshold_db: float, path: Path, title: str) -> Path:
    """Write the PNG atomically; identical tensors sit on a line at the top, marked as such."""
    fig = new_figure(11, 4.5, FIGURE_DPI)
    ax = fig.subplots()
    for report in reports:
        if not report.rows:
            continue
        depth = [row.depth for row in report.rows]
        psnr = [IDENTICAL_DB if row.psnr_db == math.inf else (0.0 if math.isnan(row.psnr_db) else row.psnr_db) for row in report.rows]
        (line,) = ax.plot(depth, psnr, marker=".", markersize=2.5, linewidth=0.8, label=report.engine)
        first = next((row for row in report.rows if not row.passed), None)
        if first is not None:
            y = 0.0 if math.isnan(first.psnr_db) else min(first.psnr_db, IDENTICAL_DB)
            ax.plot([first.depth], [y], marker="o", markersize=8, fillstyle="none", color=line.get_color())
            ax.annotate(
                f"first divergence: {first.tensor} ({first.op})", (first.depth, y), textcoords="offset points", xytext=(8, 8),
                fontsize=7, color=line.get_color(),
            )
    ax.axhline(threshold_db, color="black", linestyle="--", linewidth=0.8, label=f"layer threshold {threshold_db:g} dB")
    ax.axhline(IDENTICAL_DB, color="grey", linestyle=":", linewidth=0.6)
    ax.text(0, IDENTICAL_DB, " identical", fontsize=7, color="grey", va="bottom")
    ax.set_xlabel("depth (node index in the reference ONNX graph)")
    ax.set_ylabel("PSNR vs reference (dB, peak = max |reference|)")
    ax.set_ylim(bottom=0, top=IDENTICAL_DB + 10)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_png(fig, path)
    return path
