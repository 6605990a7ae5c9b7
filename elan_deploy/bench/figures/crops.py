"""`crops.png`: bicubic, the FP32 reference, the chosen engines and HR on one enlarged patch.

Each engine's |engine − reference| is drawn under it, amplified so that quantization loss is
visible. Which patch and how much amplification are decided in `crop_choice`; this module only
draws (matplotlib without pyplot, see `elan_deploy.plotting`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from elan_deploy.bench.figures.cells import REFERENCE_CELL
from elan_deploy.bench.figures.crop_choice import (
    CROP_SIZE,
    CropBox,
    CropSample,
    amplification,
    choose_crop_among,
    difference_map,
)
from elan_deploy.plotting import FIGURE_DPI, matplotlib_missing, new_figure, save_png

if TYPE_CHECKING:
    from matplotlib.axes import Axes


@dataclass
class CropFigure:
    """The drawn figure and what was chosen for it, so that a test can check the choice."""

    fig: Any
    sample: str
    box: CropBox
    amplify: int
    engines: list[str]


def crop_figure(samples: Sequence[CropSample], scale: int, engines: Sequence[str], reference: str = REFERENCE_CELL,
                size: int = CROP_SIZE, box: CropBox | None = None, image_index: int | None = None) -> CropFigure | str:
    """bicubic | reference | engines | HR on the chosen crop, each engine's amplified error under it."""
    if (missing := matplotlib_missing()) is not None:
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
    fig = new_figure(2.35 * columns + 0.3, height, FIGURE_DPI)
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


def _no_ticks(axes: Axes) -> None:
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
    save_png(drawn.fig, path)
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
    save_png(drawn.fig, path)
    return None
