"""Latency workers: one process per engine, and what they report when they fail."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from elan_deploy.bench.worker import LatencyWorker, WorkerFailed, WorkerSpec
from elan_deploy.runtimes import EngineLoader, ModelSource, ShapeRange


def test_a_worker_that_cannot_open_its_engine_reports_why(tmp_path: Path, bundled) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx file")
    source = ModelSource(bundled, windows="reshape", onnx=broken)
    spec = WorkerSpec(EngineLoader(source, "onnxruntime", "fp32", ShapeRange.static((1, 3, 16, 16)), 1, tmp_path / "cache"))
    with pytest.raises(WorkerFailed) as failure:
        LatencyWorker(spec)
    assert failure.value.kind == "failed" and not failure.value.timed_out
    assert "onnx" in str(failure.value).lower()  # the loader's own error about the file, not a timeout


def test_a_worker_that_dies_mid_run_is_reported_not_fatal(tmp_path: Path, bundled) -> None:
    source = ModelSource(bundled, windows="reshape")
    spec = WorkerSpec(EngineLoader(source, "torch", "fp32", ShapeRange.static((1, 3, 16, 16)), 1, tmp_path / "cache"))
    worker = LatencyWorker(spec)
    assert worker.ready.first_output.shape == (1, 3, 64, 64)
    assert len(worker.run(0, 2, 2, 0.0)) == 2
    os.kill(worker.pid, 9)
    with pytest.raises(WorkerFailed, match="died"):
        worker.run(0, 1, 1, 0.0)
