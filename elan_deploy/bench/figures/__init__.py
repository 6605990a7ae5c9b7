"""The benchmark's two pictures, for readers who would rather look than read the tables.

`latency_vs_psnr.png` (`scatter`) puts every latency cell (`cells`) at its p50 against its
dataset Y-PSNR, marks the Pareto front and keeps every label readable (`labels`).

`crops.png` (`crops`) shows bicubic, the FP32 reference, the chosen engines and HR on the patch
where a difference can be seen, with each engine's |engine − reference| amplified so that
quantization loss is visible; which patch, which engines and how much amplification are chosen
in `crop_choice`.

The choices (Pareto front, crop box, amplification) are pure functions, tested without drawing.
Drawing uses matplotlib (the [plot] extra) through `elan_deploy.plotting`, without pyplot, so no
global state is touched. The names below are the package's interface; callers import them from
here rather than from the modules, which may be rearranged.
"""

from elan_deploy.bench.figures.cells import QUALITY_TIE_DB, REFERENCE_CELL, CellPoint, cell_points, pareto_front
from elan_deploy.bench.figures.crop_choice import (
    CROP_SIZE,
    CropBox,
    CropSample,
    amplification,
    choose_crop,
    choose_crop_among,
    crop_engines,
    detail_energy,
    difference_map,
    window_means,
)
from elan_deploy.bench.figures.crops import CropFigure, crop_figure, write_crop_figure, write_crops
from elan_deploy.bench.figures.scatter import (
    KEY_OFFSET_IN,
    KEY_WIDTH_IN,
    LABEL_REACH_PX,
    PRECISION_MARKERS,
    RUNTIME_COLOURS,
    ScatterFigure,
    scatter_figure,
    write_scatter,
)
from elan_deploy.plotting import PLOT_EXTRA

__all__ = [
    "CROP_SIZE", "KEY_OFFSET_IN", "KEY_WIDTH_IN", "LABEL_REACH_PX", "PLOT_EXTRA", "PRECISION_MARKERS", "QUALITY_TIE_DB",
    "REFERENCE_CELL", "RUNTIME_COLOURS", "CellPoint", "CropBox", "CropFigure", "CropSample", "ScatterFigure", "amplification",
    "cell_points", "choose_crop", "choose_crop_among", "crop_engines", "crop_figure", "detail_energy", "difference_map",
    "pareto_front", "scatter_figure", "window_means", "write_crop_figure", "write_crops", "write_scatter",
]
