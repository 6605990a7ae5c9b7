"""`elan-deploy upscale`: super-resolve an image, a folder of images (here or on Ray) or a video."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from elan_deploy.batch.outputs import JobSettings
from elan_deploy.batch.plan import Plan, plan_upscale
from elan_deploy.batch.video import DEFAULT_CRF
from elan_deploy.batch.work import UpscaleSettings
from elan_deploy.commands.common import (
    add_engine_args,
    add_model_args,
    add_tiling_args,
    loader_from_args,
    positive_int,
    resolve_auto_engine,
    warn_if_precision_differs,
)
from elan_deploy.console import LiveSteps, quiet_library_progress, stderr
from elan_deploy.errors import ElanDeployError
from elan_deploy.upscale import Upscaler


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


def job_settings_from_args(args: argparse.Namespace, loader) -> JobSettings:
    """The settings recorded in every output, known before any engine is built."""
    return JobSettings(
        loader.source.fingerprint(), loader.source.scale, args.runtime, args.precision.lower(), str(loader.engine_shapes),
        args.tile or None, args.overlap,
    )


def run_upscale(args: argparse.Namespace) -> int:
    from elan_deploy.batch.run import BatchOptions, run_batch

    plan = plan_upscale(args.input, args.output, overwrite=args.overwrite, recursive=args.recursive)
    check_flags(args, plan)
    resolve_auto_engine(args)  # before the settings are recorded in outputs or sent to Ray actors
    loader = loader_from_args(args)
    shapes = loader.engine_shapes
    rules = loader.source.size_rules
    settings = UpscaleSettings(rules.scale, args.tile or None, args.overlap, args.batch, shapes if shapes.is_static else None, rules.multiple)
    options = BatchOptions(args.overwrite, args.ray, args.ray_address, args.actors, _video_options(args) if plan.video else None)
    with contextlib.ExitStack() as stack:  # the live view opens at the first step: an engine's first build, or the work
        # NNCF's bars name no step and would draw beside the live view; the build step says what runs
        stack.enter_context(quiet_library_progress())
        steps = LiveSteps(stack)
        loader.source.range_guard(steps)  # the outputs record the fingerprint: a checkpoint's first ranges are measured first
        run = run_batch(
            plan, loader, settings, job_digest(args, plan, loader), options, steps, lambda info: _engine_opened(args, plan, info),
        )
    for report in run.video_reports:
        stderr.print(f"{report.frames} frames in {report.seconds:.1f} s ({report.frames / report.seconds:.2f} frames/s), "
                     f"{report.codec}, {report.audio_streams} audio stream(s) copied", markup=False)
    return run.summary.finish(lambda line: stderr.print(line, markup=False, soft_wrap=True), run.where, run.what, run.left_out)


def _engine_opened(args: argparse.Namespace, plan: Plan, info) -> None:
    """Before any work: a warning when another precision runs, and for a video the encoder note."""
    warn_if_precision_differs(info, args.precision)
    if plan.video:
        from elan_deploy.batch.video import choose_codec

        if note := choose_codec(args.codec)[1]:
            stderr.print(f"note: {note}", markup=False)


def job_digest(args: argparse.Namespace, plan: Plan, loader) -> str:
    """The digest recorded in every output; a video's also covers the encoder settings."""
    settings = job_settings_from_args(args, loader)
    if not plan.video:
        return settings.digest()
    from dataclasses import asdict

    from elan_deploy.batch.video import choose_codec

    return settings.digest(video={**asdict(_video_options(args)), "codec": choose_codec(args.codec)[0]})


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
    add_engine_args(p, default_runtime="auto", default_precision="auto")
    add_tiling_args(p)
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
