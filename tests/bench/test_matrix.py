"""The benchmark matrix planned for a CPU: emulated cells and duplicates are left out with their reason."""

from __future__ import annotations

import pytest

from elan_deploy.bench.matrix import Cell, build_matrix, plan_for_cpu
from elan_deploy.export.strategies import DEFAULT_WINDOWS, WINDOW_STRATEGIES
from tests.helpers import AVX2, SAPPHIRE_RAPIDS, X86, ZEN4


@pytest.mark.skipif(not X86, reason="precision support is judged by x86 flags")
def test_default_plan_on_avx2_skips_emulated_cells_with_their_reason() -> None:
    cells = build_matrix()
    skips = plan_for_cpu(cells, None, AVX2)
    assert {c.label for c in skips} == {"torch bf16", "torch-compile bf16", "openvino bf16", "openvino fp16"}
    assert all("not native here" in s.reason and "this CPU has AVX2 (avx2)" in s.reason and "--precision" in s.reason for s in skips.values())
    assert "openvino fp32 cell measures" in skips[Cell("openvino", "bf16")].reason
    named = plan_for_cpu(cells, ["bf16"], AVX2)  # asked for by name: they run
    assert {c.label for c in named} == {"openvino fp16"}


@pytest.mark.skipif(not X86, reason="precision support is judged by x86 flags")
def test_a_cell_that_would_run_another_cells_precision_is_a_duplicate() -> None:
    cells = build_matrix()
    skips = plan_for_cpu(cells, None, ZEN4)
    assert list(skips) == [Cell("openvino", "fp16")]
    assert skips[Cell("openvino", "fp16")].duplicate_of == "openvino bf16"
    assert plan_for_cpu(cells, None, SAPPHIRE_RAPIDS) == {}  # f16 is native there: nothing to leave out
    assert plan_for_cpu(cells, ["fp16", "bf16"], ZEN4) == {}
    # another window strategy is another engine, not a duplicate of the default one
    every = plan_for_cpu(build_matrix(strategies=True), None, ZEN4)
    other = Cell("openvino", "bf16", windows=next(w for w in WINDOW_STRATEGIES if w != DEFAULT_WINDOWS))
    assert other in build_matrix(strategies=True) and other not in every
    assert every[Cell("openvino", "fp16")].duplicate_of == "openvino bf16"
