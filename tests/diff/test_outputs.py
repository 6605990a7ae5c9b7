"""The verdict on Polygraphy run results: an engine with NaN in its output fails."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np


def test_nan_in_an_engine_output_fails_it(tmp_path):
    """The verdict on Polygraphy RunResults where one runner returned NaN."""
    from polygraphy.comparator import IterationResult, RunResults

    from elan_deploy.diff.outputs import Tolerances, compare_outputs, verdict

    ref = np.linspace(0, 255, 2 * 3 * 8 * 8, dtype=np.float32).reshape(2, 3, 8, 8)
    bad = ref.copy()
    bad[0, 0, 0, :3] = np.nan
    results = RunResults()
    for name, value in (("ref", ref), ("same", ref.copy()), ("nan", bad)):
        results.append((name, [IterationResult(OrderedDict(sr=value), runner_name=name)]))
    tolerances = Tolerances(40.0)
    rows = compare_outputs(results, tolerances)
    assert rows[1]["nonfinite"] == 0 and verdict(rows[1], tolerances) == (True, [])
    passed, reasons = verdict(rows[2], tolerances)
    assert rows[2]["nonfinite"] == 3 and not passed and "3 NaN/Inf" in reasons[0]
