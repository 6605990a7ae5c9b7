"""PyTorch engines: the torch.compile baseline against eager."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_torch_compile_baseline_matches_eager(bundled) -> None:
    """The frozen inductor graph computes the reference model (compiles for about a minute)."""
    import numpy as np

    from elan_deploy.runtimes import Precision
    from elan_deploy.runtimes.torch_rt import CompiledTorchEngine, TorchEngine

    x = np.tile(np.linspace(0, 255, 32, dtype=np.float32), (1, 3, 32, 1))
    eager = TorchEngine(bundled.model, Precision.FP32)(x)
    compiled = CompiledTorchEngine(bundled.model, Precision.FP32)(x)
    assert np.abs(compiled - eager).max() <= 1e-3 * np.abs(eager).max()
