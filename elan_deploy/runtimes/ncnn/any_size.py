"""One ncnn file for every H x W: the size-dependent Reshapes of a PNNX conversion rewritten
as ncnn shape expressions.

PNNX traces at one input shape and writes every Reshape with the window counts of that shape,
so a plain conversion runs one H x W. Small images then have to be placed on a larger canvas,
where ELAN's shifted windows wrap at the canvas instead of at the image (Set5 lost 0.012 dB
that way, and raw hard-edged images lost up to 57 dB of fidelity). PNNX's own dynamic route
(`inputshape2`) writes layers ncnn cannot load (`experiments.ncnn_dynamic_shapes`).

Here the network is converted at two probe shapes instead. The two files must be the same
graph with the same weights, differing only in Reshape sizes; each size that differs is an
axis that follows H or W, and it is written as ncnn's shape expression (the Reshape's `6=`,
ncnn >= 20250428) of the Reshape's own input: that input's axis as is (`0h`), divided
(`//(0h,4)`) or multiplied (`*(0c,8)`) by the one integer that holds at both probes. The
`rank4` window form (`export.rewrites.windows`) keeps every such axis a whole multiple or
divisor of one input axis. A size no single input axis explains stops the build.

The probes' window counts differ at every window size (2/3, 4/6, 8/12 against 3/4, 6/8,
12/16) and their aspect ratios differ, so no axis can match by coincidence at both; the
build then verifies the file at two further shapes against PyTorch (`ncnn_rt.verify`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from elan_deploy.errors import WorkFailed
from elan_deploy.fileio import write_bytes_atomic
from elan_deploy.runtimes.base import Shape
from elan_deploy.runtimes.ncnn.param_file import Graph, Layer

PROBE_SHAPES: tuple[Shape, Shape] = ((1, 3, 32, 48), (1, 3, 48, 64))
# A Reshape's output axes as `.param` keys, in the order of ncnn's shape expression (w, h, d, c).
AXIS_KEYS = (("w", "0"), ("h", "1"), ("d", "11"), ("c", "2"))
SHAPE_EXPRESSION_KEY = "6"

BlobShape = Mapping[str, int]  # ncnn's axes of one blob: w, h, d, c


@dataclass(frozen=True)
class SizedReshape:
    """A Reshape whose output sizes differ between the probes: `sizes` maps axis → (probe 1, probe 2)."""

    index: int
    layer: Layer
    sizes: dict[str, tuple[int, int]]


def size_dependent_reshapes(first: Graph, second: Graph) -> list[SizedReshape]:
    """The Reshapes whose sizes follow H or W; anything else that differs stops the build."""
    if len(first.layers) != len(second.layers) or first.blob_count != second.blob_count:
        raise WorkFailed("PNNX wrote different graphs at the two probe shapes; an ncnn engine for any size cannot be made")
    found = []
    for index, (a, b) in enumerate(zip(first.layers, second.layers)):
        if a == b:
            continue
        if a.type != "Reshape" or (a.type, a.name, a.bottoms, a.tops, set(a.params)) != (b.type, b.name, b.bottoms, b.tops, set(b.params)):
            raise WorkFailed(f"PNNX wrote {a.type} '{a.name}' differently at the two probe shapes; only Reshape sizes may follow H x W")
        sizes = {axis: (int(a.params[key]), int(b.params[key])) for axis, key in AXIS_KEYS if key in a.params}
        found.append(SizedReshape(index, a, sizes))
    return found


def axis_expression(sizes: tuple[int, int], bottoms: tuple[BlobShape, BlobShape]) -> str:
    """`sizes` (at the two probes) as an expression of one axis of the Reshape's input."""
    if sizes[0] == sizes[1]:
        return str(sizes[0])
    for axis, _ in AXIS_KEYS:
        inputs = (bottoms[0][axis], bottoms[1][axis])
        if inputs == sizes:
            return f"0{axis}"
        for (small, large), op in (((sizes, inputs), "//"), ((inputs, sizes), "*")):
            if all(part > 0 and whole % part == 0 for part, whole in zip(small, large)) and large[0] // small[0] == large[1] // small[1] > 1:
                return f"{op}(0{axis},{large[0] // small[0]})"
    raise WorkFailed(f"no input axis explains a Reshape size of {sizes[0]} / {sizes[1]} at the two probe shapes; build an ncnn engine per shape")


def relax(first: Graph, reshapes: list[SizedReshape], bottoms: Mapping[str, tuple[BlobShape, BlobShape]]) -> Graph:
    """`first` with each size-dependent Reshape computing its sizes from its input's shape.

    The literal sizes stay: ncnn reads the number of axes from them, then takes the expression.
    """
    layers = list(first.layers)
    for reshape in reshapes:
        shapes = bottoms[reshape.layer.bottoms[0]]
        terms = [axis_expression(reshape.sizes[axis], shapes) for axis, _ in AXIS_KEYS if axis in reshape.sizes]
        params = {**reshape.layer.params, SHAPE_EXPRESSION_KEY: '"' + ",".join(terms) + '"'}
        layers[reshape.index] = Layer(reshape.layer.type, reshape.layer.name, reshape.layer.bottoms, reshape.layer.tops, params)
    return Graph(layers, first.blob_count)


def blob_shapes(net: Any, shape: Shape, blobs: list[str], input_blob: str) -> dict[str, BlobShape]:
    """The shapes of `blobs` when `net` (loaded with every blob kept) runs at `shape`."""
    import ncnn  # the caller loaded `net` with it
    array = np.full(shape[1:], 127.0, np.float32)  # ncnn.Mat wraps this buffer: it lives until the extractor is done
    found: dict[str, BlobShape] = {}
    with net.create_extractor() as extractor:
        extractor.input(input_blob, ncnn.Mat(array))
        for blob in blobs:
            status, mat = extractor.extract(blob)
            if status != 0:
                raise WorkFailed(f"ncnn could not run the PNNX conversion at {shape[2]}x{shape[3]} up to blob {blob}")
            found[blob] = {"w": mat.w, "h": mat.h, "d": mat.d, "c": mat.c}
    return found


def write_any_size(open_net: Callable[[Path], Any], probes: tuple[Path, Path], param: str, weights: str, input_blob: str, out: Path) -> int:
    """From the conversions at PROBE_SHAPES in `probes`, write the any-size `.param` into `out`
    (with the first probe's weights, which must equal the second's); returns how many Reshapes
    now follow the input's size. `open_net(folder)` loads a probe with every blob kept."""
    first, second = (Graph.read(folder / param) for folder in probes)
    if (probes[0] / weights).read_bytes() != (probes[1] / weights).read_bytes():
        raise WorkFailed("PNNX wrote different weights at the two probe shapes; an ncnn engine for any size cannot be made")
    reshapes = size_dependent_reshapes(first, second)
    inputs = sorted({reshape.layer.bottoms[0] for reshape in reshapes})
    measured = [blob_shapes(open_net(folder), shape, inputs, input_blob) for folder, shape in zip(probes, PROBE_SHAPES)]
    bottoms = {blob: (measured[0][blob], measured[1][blob]) for blob in inputs}
    write_bytes_atomic(out / param, relax(first, reshapes, bottoms).text().encode())
    write_bytes_atomic(out / weights, (probes[0] / weights).read_bytes())
    return len(reshapes)
