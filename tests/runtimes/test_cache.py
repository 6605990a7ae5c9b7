"""The engine cache: reuse, corruption detected and rebuilt, one entry for every thread count, no entry from a failed build."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from elan_deploy.runtimes import EngineLoader, ShapeRange
from elan_deploy.runtimes.cache import MANIFEST


def test_engine_cache_reuses_and_detects_corruption(model_source, tmp_path: Path) -> None:
    loader = EngineLoader(model_source, "onnxruntime", "fp32", ShapeRange.parse("1x3x32x32"), cache_root=tmp_path)
    first = loader.build()
    assert first.parent.parent == loader.cache.root == tmp_path / "engines"
    assert loader.build() == first
    engine_file = first / "model.onnx"
    engine_file.write_bytes(engine_file.read_bytes()[:5000])  # corrupted on disk
    with pytest.warns(UserWarning, match="corrupt"):
        rebuilt = loader.build()
    assert rebuilt == first and (rebuilt / MANIFEST).is_file()
    assert loader.open()(np.full((1, 3, 32, 32), 100, np.float32)).shape == (1, 3, 128, 128)


def test_one_cached_engine_serves_every_thread_count(model_source, tmp_path: Path) -> None:
    shapes = ShapeRange.parse("1x3x32x32")
    one = EngineLoader(model_source, "onnxruntime", "fp32", shapes, threads=1, cache_root=tmp_path).open()
    two = EngineLoader(model_source, "onnxruntime", "fp32", shapes, threads=2, cache_root=tmp_path).open()
    entries = [p for p in (tmp_path / "engines" / "onnxruntime").iterdir() if p.is_dir()]
    assert len(entries) == 1  # threads apply at load, not in the file
    assert (one.info.threads, two.info.threads) == (1, 2)


def test_failed_build_leaves_no_cache_entry(model_source, tmp_path: Path, monkeypatch) -> None:
    from elan_deploy.runtimes import onnxruntime_rt

    def explode(*args, **kwargs):
        raise RuntimeError("crash mid-build")

    monkeypatch.setattr(onnxruntime_rt, "copy_onnx", explode)
    with pytest.raises(RuntimeError):
        EngineLoader(model_source, "onnxruntime", "fp32", ShapeRange.parse("1x3x32x32"), cache_root=tmp_path).build()
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".lock"]  # only the entry's lock file
