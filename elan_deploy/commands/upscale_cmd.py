"""`elan-deploy upscale`: super-resolve an image, a folder of images (here or on Ray) or a video."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from elan_deploy.batch.outputs import JobSettings, OutputState, OutputTag, output_state, record_output
from elan_deploy.batch.plan import Plan, plan_upscale, refuse_other_outputs
from elan_deploy.batch.results import BatchSummary, FileResult, run_guarded, skipped
from elan_deploy.batch.video import DEFAULT_CRF
from elan_deploy.batch.work import EngineRecipe, UpscaleSettings
from elan_deploy.commands.common import (
    add_engine_args,
    add_model_args,
    engine_from_args,
    positive_int,
    resolve_auto_precision,
    warn_if_precision_differs,
)
from elan_deploy.console import progress, stderr
from elan_deploy.errors import ElanDeployError
from elan_deploy.upscale import DEFAULT_OVERLAP, DEFAULT_TILE, Upscaler


def check_flags(args: argparse.Namespace, plan: Plan) -> None:
    """Flags that do not fit the input are usage errors, found before any work."""
    video_flags = [f for f, v in (("--codec", args.codec), ("--crf", args.crf), ("--bitrate", args.bitrate),
                                  ("--allow-partial", args.allow_partial or None)) if v is not None]
    if video_flags and not plan.video:
        raise ElanDeployError(f"{', '.join(video_flags)} apply to video inputs only; '{args.input}' is not a video")
    if args.crf is not None and args.bitrate is not None:
        raise ElanDeployError("pass --crf or --bitrate, not both")
    ray_flags = [f for f, v in (("--ray-address", args.ray_address), ("--actors", args.actors)) if v is not None]
    if ray_flags and not args.ray:
        raise ElanDeployError(f"{', '.join(ray_flags)} need --ray")
    if args.ray and plan.video:
        raise ElanDeployError("--ray runs folders of images; a video runs in this process (drop --ray)")
    tile = args.tile or None
    Upscaler(None, args.scale, tile=tile, overlap=args.overlap, batch=args.batch)  # type: ignore[arg-type] - checks tile/overlap only
    if args.ray:
        from elan_deploy.batch.extras import require

        require("ray")
        require("ray.data")
    if plan.video:
        from elan_deploy.batch.extras import require
        from elan_deploy.batch.video import check_options, choose_codec

        require("av")
        check_options(choose_codec(args.codec)[0], _video_options(args))


def _video_options(args: argparse.Namespace):
    from elan_deploy.batch.video import VideoOptions, parse_bitrate

    return VideoOptions(args.codec, args.crf, parse_bitrate(args.bitrate) if args.bitrate is not None else None, args.allow_partial)


def job_settings_from_args(args: argparse.Namespace) -> JobSettings:
    """The settings recorded in every output, known before any engine is built."""
    from elan_deploy.commands.common import source_and_cache_from_args
    from elan_deploy.model import load_model
    from elan_deploy.runtimes import ShapeRange, default_shapes_for

    source, _ = source_and_cache_from_args(args, load_model(args.model, args.scale))
    shapes = ShapeRange.parse(args.shapes) if args.shapes else default_shapes_for(args.runtime)
    return JobSettings(source.fingerprint(), source.scale, args.runtime, args.precision.lower(), str(shapes), args.tile or None, args.overlap)


def open_engine_for(args: argparse.Namespace):
    """(source, engine, UpscaleSettings) from the flags; warns when another precision runs."""
    source, engine, shapes = engine_from_args(args)
    warn_if_precision_differs(engine.info, args.precision)
    settings = UpscaleSettings(source.scale, args.tile or None, args.overlap, args.batch, shapes if shapes.is_static else None)
    return source, engine, shapes, settings


def run_upscale(args: argparse.Namespace) -> int:
    plan = plan_upscale(args.input, args.output, overwrite=args.overwrite, recursive=args.recursive)
    check_flags(args, plan)
    resolve_auto_precision(args)  # before the settings are recorded in outputs or sent to Ray actors

    # Every existing output is classified before any engine is built or anything is written.
    digest = job_digest(args, plan)
    states = [output_state(job.output, job.source, digest) for job in plan.jobs]
    if not args.overwrite:
        refuse_other_outputs(list(plan.jobs), states)
    summary = BatchSummary()
    todo = []
    for job, state in zip(plan.jobs, states):
        if state is OutputState.DONE and not args.overwrite:
            summary.add(skipped(job.source, job.output))
        else:
            todo.append(job)
    if plan.video:
        return _finish(summary, str(plan.jobs[0].output), "video") if not todo else _start_video(args, plan, digest)
    if todo:
        source, engine, shapes, settings = open_engine_for(args)
        for folder in dict.fromkeys(job.output.parent for job in todo):  # subfolders mirror the input's (--recursive)
            folder.mkdir(parents=True, exist_ok=True)
        with progress() as bar:
            task = bar.add_task(f"upscale x{source.scale} ({engine.info.runtime} {engine.info.precision_used})", total=len(todo))

            def advance(result: FileResult) -> None:
                summary.add(result)
                bar.advance(task)

            if args.ray:
                from elan_deploy.batch.ray_data import run_ray

                folder = engine.info.details.get("engine")
                recipe = EngineRecipe(args.runtime, args.precision, shapes, args.threads, folder, source)
                del engine  # the actors open their own
                run_ray(todo, recipe, settings, digest, args.ray_address, args.actors, advance)
            else:
                from elan_deploy.batch.folder import run_plain

                run_plain(todo, settings.upscaler(engine), digest, advance)
    return _finish(summary, str(plan.folder), "image", plan.skipped_note())


def _finish(summary: BatchSummary, where: str, what: str, left_out: str | None = None) -> int:
    return summary.finish(lambda line: stderr.print(line, markup=False, soft_wrap=True), where, what, left_out)


def job_digest(args: argparse.Namespace, plan: Plan) -> str:
    """The digest recorded in every output; a video's also covers the encoder settings."""
    settings = job_settings_from_args(args)
    if not plan.video:
        return settings.digest()
    from dataclasses import asdict

    from elan_deploy.batch.video import choose_codec

    return settings.digest(video={**asdict(_video_options(args)), "codec": choose_codec(args.codec)[0]})


def _start_video(args: argparse.Namespace, plan: Plan, digest: str) -> int:
    """Open the engine and run the video; its output is recorded as this input's with these settings."""
    from elan_deploy.fileio import file_sha256

    tag = OutputTag(file_sha256(plan.jobs[0].source), digest)
    _, engine, _, settings = open_engine_for(args)
    return _run_video(args, plan, settings.upscaler(engine), tag)


def _run_video(args: argparse.Namespace, plan: Plan, upscaler: Upscaler, tag: OutputTag) -> int:
    from elan_deploy.batch.video import choose_codec, upscale_video

    job = plan.jobs[0]
    _, note = choose_codec(args.codec)
    if note:
        stderr.print(f"note: {note}", markup=False)
    summary = BatchSummary()
    with progress() as bar:
        task = bar.add_task(f"upscale video x{upscaler.scale}", total=None)
        started = time.perf_counter()

        def on_frame(done: int, total: int | None) -> None:
            rate = done / max(time.perf_counter() - started, 1e-9)
            left = f", {(total - done) / rate:.0f} s left" if total and total >= done else ""
            bar.update(task, completed=done, total=total, description=f"upscale video x{upscaler.scale} ({rate:.2f} frames/s{left})")

        reports = []

        def work() -> tuple[str, ...]:
            reports.append(upscale_video(job.source, job.output, upscaler, _video_options(args), on_frame))
            record_output(job.output, tag)  # provenance: a rerun knows this complete output as done
            return reports[-1].notes  # a partial decode, a bit depth or chroma the encoder could not keep

        summary.add(run_guarded(job.source, job.output, work))
    for report in reports:
        stderr.print(f"{report.frames} frames in {report.seconds:.1f} s ({report.frames / report.seconds:.2f} frames/s), "
                     f"{report.codec}, {report.audio_streams} audio stream(s) copied", markup=False)
    return summary.finish(lambda line: stderr.print(line, markup=False, soft_wrap=True), str(job.output), "video")


def _crf(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "upscale",
        help="super-resolve an image, a folder of images (optionally on Ray) or a video",
        description="Outputs that exist complete are skipped (a rerun resumes); inputs and files this tool did not "
        "write are never replaced unless --overwrite is given.",
    )
    p.add_argument("input", type=Path, help="image file, folder of images, or video file (.mp4, .mkv, .mov, ...)")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="output file (.png/.jpg/.bmp/.tif/.webp; a video extension for a video) or folder (PNGs)")
    add_model_args(p)
    add_engine_args(p, default_precision="auto")
    p.add_argument("--tile", type=int, default=DEFAULT_TILE, help=f"LR tile size above which images are tiled; 0 = never [{DEFAULT_TILE}]")
    p.add_argument("--overlap", type=int, default=None, help=f"tile overlap in LR pixels [{DEFAULT_OVERLAP}, at most half the tile]")
    p.add_argument("--batch", type=positive_int, default=1, help="tiles per engine call [1]")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs, even inputs or files this tool did not write")
    p.add_argument("--recursive", action="store_true",
                   help="also upscale the images in the input folder's subfolders; outputs mirror their layout under -o")
    ray = p.add_argument_group("many images on Ray Data (pip install 'elan-deploy[ray]')")
    ray.add_argument("--ray", action="store_true", help="run the folder on a pool of Ray actors, one engine each")
    ray.add_argument("--ray-address", help="join this Ray cluster [start a local instance with this machine's CPUs]")
    ray.add_argument("--actors", type=positive_int, help="actors in the pool [one per two CPUs of the cluster]")
    video = p.add_argument_group("video (pip install 'elan-deploy[video]')")
    video.add_argument("--codec", help="video encoder [libx264, else mpeg4]")
    video.add_argument("--crf", type=_crf, help=f"constant quality for libx264/libx265/vp9/av1 (lower is better) [{DEFAULT_CRF}]")
    video.add_argument("--bitrate", help="target bit rate, e.g. 8M or 800k [crf for libx264, else 0.2 bits per pixel]")
    video.add_argument("--allow-partial", action="store_true",
                       help="write what decodes of a truncated or damaged video, saying what is missing [fail it, write nothing]")
    p.set_defaults(handler=run_upscale)
