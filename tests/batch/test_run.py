"""`run_batch`, the library call behind `upscale`: a folder through one engine, then a rerun that resumes."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from elan_deploy.batch.outputs import JobSettings
from elan_deploy.batch.plan import plan_upscale
from elan_deploy.batch.run import BatchOptions, pending_jobs, run_batch
from elan_deploy.batch.work import UpscaleSettings
from elan_deploy.imaging import read_image
from elan_deploy.runtimes import EngineLoader
from tests.helpers import StepRecorder, photo_crop


def test_a_folder_runs_once_and_a_rerun_finds_it_done(model_source, shared_data: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for i, size in enumerate(((20, 28), (16, 16))):
        Image.fromarray(photo_crop(shared_data, *size)).save(folder / f"p{i}.png")
    loader = EngineLoader(model_source, "torch", "fp32", threads=1, cache_root=tmp_path / "cache")
    rules = model_source.size_rules
    settings = UpscaleSettings(rules.scale, None, 0, 1, None, rules.multiple)
    digest = JobSettings(model_source.fingerprint(), rules.scale, "torch", "fp32", str(loader.engine_shapes), None, 0).digest()
    plan = plan_upscale(folder, tmp_path / "out")
    heard, progress = [], StepRecorder()
    run = run_batch(plan, loader, settings, digest, BatchOptions(), progress, on_engine=lambda info: heard.append(info.runtime))
    assert heard == ["torch"] and progress.started == [("upscale x4 (torch fp32)", 2)] and progress.completed == [1, 2]
    assert run.what == "image" and run.where == str(tmp_path / "out")
    for i, (h, w) in enumerate(((20, 28), (16, 16))):
        assert read_image(tmp_path / "out" / f"p{i}.png").shape == (4 * h, 4 * w, 3)
    todo, summary = pending_jobs(plan_upscale(folder, tmp_path / "out"), digest, overwrite=False)
    assert todo == [] and len(summary.results) == 2  # both outputs are known as done: nothing is opened again


def test_a_first_engine_build_is_its_own_step_and_a_cached_one_is_not(model_source, shared_data: Path, tmp_path: Path) -> None:
    """INT8 calibrates on T91 for minutes the first time: the build shows as a step before the work."""
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(photo_crop(shared_data, 16, 16)).save(folder / "p.png")
    loader = EngineLoader(model_source, "onnxruntime", "fp32", threads=1, cache_root=tmp_path / "cache")
    rules = model_source.size_rules
    settings = UpscaleSettings(rules.scale, None, 0, 1, None, rules.multiple)
    digest = JobSettings(model_source.fingerprint(), rules.scale, "onnxruntime", "fp32", str(loader.engine_shapes), None, 0).digest()
    assert not loader.is_built()
    first = StepRecorder()
    run_batch(plan_upscale(folder, tmp_path / "first"), loader, settings, digest, BatchOptions(), first)
    assert [d for d, _ in first.started] == ["build onnxruntime fp32 engine (first use of these settings; cached after)", "upscale x4 (onnxruntime fp32)"]
    assert loader.is_built()
    again = StepRecorder()
    run_batch(plan_upscale(folder, tmp_path / "again"), loader, settings, digest, BatchOptions(), again)
    assert again.started == [("upscale x4 (onnxruntime fp32)", 1)]
