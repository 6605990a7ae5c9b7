"""`run_batch`: the driver behind `elan-deploy upscale` for an image, a folder (here or on Ray) or a video.

Every existing output is classified before any engine is built or anything is written
(`pending_jobs`), so a refused run changes nothing and a rerun resumes. The engine is opened
once, from an `EngineLoader`; Ray actors receive the loader and open theirs from the cache the
driver has just filled. Progress goes to a `StepProgress` the caller supplies (the command's
live view, or nothing), so the library prints nothing itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from elan_deploy.batch.outputs import OutputState, OutputTag, output_state, record_output
from elan_deploy.batch.plan import Job, Plan, refuse_other_outputs
from elan_deploy.batch.results import BatchSummary, FileResult, run_guarded, skipped
from elan_deploy.batch.work import UpscaleSettings
from elan_deploy.console import NoProgress, StepProgress
from elan_deploy.runtimes import Engine, EngineInfo, EngineLoader

if TYPE_CHECKING:  # PyAV is an extra: the video modules are imported only for a video
    from elan_deploy.batch.video import VideoOptions, VideoReport


@dataclass(frozen=True)
class BatchOptions:
    """How the jobs run: in this process or on a pool of Ray actors; a video's encoder settings."""

    overwrite: bool = False
    ray: bool = False
    ray_address: str | None = None
    actors: int | None = None
    video: VideoOptions | None = None  # a video input's encoder settings


@dataclass
class BatchRun:
    """What a batch did: one result per input (done, skipped or failed) and, for a video, its report."""

    summary: BatchSummary
    where: str  # the output file or folder the summary names
    what: str  # "image" or "video"
    left_out: str | None = None  # inputs the plan passed over (not images)
    video_reports: list[VideoReport] = field(default_factory=list)


def pending_jobs(plan: Plan, digest: str, overwrite: bool) -> tuple[list[Job], BatchSummary]:
    """The jobs still to run, and a summary holding the outputs that are already done.

    Refuses (before anything is written) an output this tool did not write, unless `overwrite`.
    """
    states = [output_state(job.output, job.source, digest) for job in plan.jobs]
    if not overwrite:
        refuse_other_outputs(list(plan.jobs), states)
    summary = BatchSummary()
    todo = []
    for job, state in zip(plan.jobs, states):
        if state is OutputState.DONE and not overwrite:
            summary.add(skipped(job.source, job.output))
        else:
            todo.append(job)
    return todo, summary


def run_batch(
    plan: Plan, loader: EngineLoader, settings: UpscaleSettings, digest: str, options: BatchOptions,
    progress: StepProgress | None = None, on_engine: Callable[[EngineInfo], None] | None = None,
) -> BatchRun:
    """Upscale what `plan` holds that is not done yet; `on_engine` hears which engine runs before any work."""
    progress = progress or NoProgress()
    on_engine = on_engine or (lambda info: None)
    todo, summary = pending_jobs(plan, digest, options.overwrite)
    if plan.video:
        run = BatchRun(summary, str(plan.jobs[0].output), "video")
        if todo:
            _run_video(plan.jobs[0], loader, settings, digest, options, progress, on_engine, run)
        return run
    run = BatchRun(summary, str(plan.folder), "image", plan.skipped_note())
    if todo:
        _run_images(todo, loader, settings, digest, options, progress, on_engine, summary)
    return run


def open_engine(loader: EngineLoader, progress: StepProgress) -> Engine:
    """The loader's engine; a first use's range calibration and build are steps of their own (minutes: INT8 calibrates on T91)."""
    return loader.open(loader.start_first_use(progress))


def _run_images(
    todo: list[Job], loader: EngineLoader, settings: UpscaleSettings, digest: str, options: BatchOptions,
    progress: StepProgress, on_engine: Callable[[EngineInfo], None], summary: BatchSummary,
) -> None:
    engine = open_engine(loader, progress)
    on_engine(engine.info)
    for folder in dict.fromkeys(job.output.parent for job in todo):  # subfolders mirror the input's (--recursive)
        folder.mkdir(parents=True, exist_ok=True)
    progress.start(f"upscale x{loader.source.scale} ({engine.info.runtime} {engine.info.precision_used})", len(todo))
    done = 0

    def advance(result: FileResult) -> None:
        nonlocal done
        summary.add(result)
        done += 1
        progress.update(completed=done)

    if options.ray:
        from elan_deploy.batch.ray_data import run_ray

        del engine  # the actors open their own, from the cache the driver just filled
        run_ray(todo, loader, settings, digest, options.ray_address, options.actors, advance)
    else:
        from elan_deploy.batch.folder import run_plain

        run_plain(todo, settings.upscaler(engine), digest, advance)


def _run_video(
    job: Job, loader: EngineLoader, settings: UpscaleSettings, digest: str, options: BatchOptions,
    progress: StepProgress, on_engine: Callable[[EngineInfo], None], run: BatchRun,
) -> None:
    """Open the engine and run the video; its output is recorded as this input's with these settings."""
    from elan_deploy.batch.video import upscale_video
    from elan_deploy.fileio import file_sha256

    tag = OutputTag(file_sha256(job.source), digest)
    engine = open_engine(loader, progress)
    on_engine(engine.info)
    upscaler = settings.upscaler(engine)
    run.summary = BatchSummary()
    progress.start(f"upscale video x{upscaler.scale}", None)
    started = time.perf_counter()

    def on_frame(done: int, total: int | None) -> None:
        rate = done / max(time.perf_counter() - started, 1e-9)
        left = f", {(total - done) / rate:.0f} s left" if total and total >= done else ""
        progress.update(completed=done, total=total, description=f"upscale video x{upscaler.scale} ({rate:.2f} frames/s{left})")

    def work() -> tuple[str, ...]:
        run.video_reports.append(upscale_video(job.source, job.output, upscaler, options.video, on_frame))
        record_output(job.output, tag)  # provenance: a rerun knows this complete output as done
        return run.video_reports[-1].notes  # a partial decode, a bit depth or chroma the encoder could not keep

    run.summary.add(run_guarded(job.source, job.output, work))
