"""The any-size rewrite on hand-written `.param` graphs (the whole network: tests/runtimes/test_ncnn_rt.py)."""

from __future__ import annotations

import pytest

from elan_deploy.errors import WorkFailed
from elan_deploy.runtimes.ncnn.any_size import axis_expression, relax, size_dependent_reshapes
from elan_deploy.runtimes.ncnn.param_file import Graph

# A window partition of a 1-channel-last feature map (c=H, h=W, w=C=20) into 4-pixel window rows,
# PNNX-style, at the two probes (32x48 and 48x64); the Permute and Slice do not depend on the size.
PROBE_1 = """7767517
4 5
Input                    in0                      0 1 in0
Permute                  permute_0                1 1 in0 1 0=3
Reshape                  reshape_0                1 1 1 2 0=80 1=12 11=4 2=8
Slice                    split_0                  1 2 2 3 4 -23300=2,40,40 1=3
"""
PROBE_2 = PROBE_1.replace("0=80 1=12 11=4 2=8", "0=80 1=16 11=4 2=12")


def graph(tmp_path, text: str, name: str) -> Graph:
    path = tmp_path / name
    path.write_text(text)
    return Graph.read(path)


def test_only_the_sizes_that_follow_the_input_become_expressions(tmp_path) -> None:
    first, second = graph(tmp_path, PROBE_1, "a.param"), graph(tmp_path, PROBE_2, "b.param")
    reshapes = size_dependent_reshapes(first, second)
    assert [(r.layer.name, r.sizes) for r in reshapes] == [("reshape_0", {"w": (80, 80), "h": (12, 16), "d": (4, 4), "c": (8, 12)})]
    # the Reshape's input at the probes: c=H, h=W, w=20 channels
    bottoms = {"1": ({"w": 20, "h": 48, "d": 1, "c": 32}, {"w": 20, "h": 64, "d": 1, "c": 48})}
    relaxed = relax(first, reshapes, bottoms)
    line = relaxed.text().splitlines()[4]
    assert line.endswith('0=80 1=12 11=4 2=8 6="80,//(0h,4),4,//(0c,4)"')
    assert relaxed.text().splitlines()[:4] == first.text().splitlines()[:4]  # other layers are written back as read


@pytest.mark.parametrize("sizes, bottoms, expected", [
    ((20, 20), ({"w": 7, "h": 1, "d": 1, "c": 1}, {"w": 9, "h": 1, "d": 1, "c": 1}), "20"),
    ((32, 48), ({"w": 20, "h": 48, "d": 1, "c": 32}, {"w": 20, "h": 64, "d": 1, "c": 48}), "0c"),
    ((6, 8), ({"w": 20, "h": 48, "d": 1, "c": 32}, {"w": 20, "h": 64, "d": 1, "c": 48}), "//(0h,8)"),
    ((48, 64), ({"w": 80, "h": 12, "d": 4, "c": 8}, {"w": 80, "h": 16, "d": 4, "c": 12}), "*(0h,4)"),
])
def test_each_size_is_one_input_axis_as_is_divided_or_multiplied(sizes, bottoms, expected) -> None:
    assert axis_expression(sizes, bottoms) == expected


def test_a_size_no_input_axis_explains_stops_the_build() -> None:
    bottoms = ({"w": 20, "h": 48, "d": 1, "c": 32}, {"w": 20, "h": 64, "d": 1, "c": 48})
    with pytest.raises(WorkFailed, match="no input axis explains a Reshape size of 7 / 9"):
        axis_expression((7, 9), bottoms)


def test_any_other_layer_that_differs_stops_the_build(tmp_path) -> None:
    first = graph(tmp_path, PROBE_1, "a.param")
    second = graph(tmp_path, PROBE_1.replace("-23300=2,40,40", "-23300=2,30,50"), "b.param")
    with pytest.raises(WorkFailed, match="Slice 'split_0' differently"):
        size_dependent_reshapes(first, second)
    fewer = Graph(first.layers[:-1], first.blob_count)
    with pytest.raises(WorkFailed, match="different graphs"):
        size_dependent_reshapes(first, fewer)

