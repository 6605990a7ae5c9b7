"""`elan-deploy build`: build (or find in the cache) one runtime × precision engine."""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from elan_deploy.commands.common import add_engine_args, add_model_args, loader_from_args, precision_differs, with_first_use_steps
from elan_deploy.console import print_table, stderr
from elan_deploy.errors import ElanDeployError


def check_output_folder(output: Path) -> None:
    """Refuse, before any work, an --output that holds something this tool did not write.

    An empty folder, a missing path, or an engine folder written by an earlier `build` may be
    (re)filled; anything else, such as `.` or a project folder, is left untouched.
    """
    from elan_deploy.runtimes.cache import is_engine_folder

    if output.is_symlink() or (output.exists() and not output.is_dir()):
        raise ElanDeployError(f"--output '{output}' exists and is not a folder; pass a new folder path for the engine")
    if output.is_dir() and any(output.iterdir()) and not is_engine_folder(output):
        raise ElanDeployError(
            f"--output '{output}' is a folder with files that are not an elan-deploy engine; "
            f"nothing was changed: pass a new or empty folder, e.g. {output / 'engine'}"
        )


def run_build(args: argparse.Namespace) -> int:
    from elan_deploy.fileio import atomic_path
    from elan_deploy.runtimes.cache import is_engine_folder
    from elan_deploy.runtimes.coreml_rt import PredictionNeedsMacOS

    if args.output is not None:
        check_output_folder(args.output)
    start = time.perf_counter()
    loader = loader_from_args(args)
    shapes = loader.engine_shapes
    folder = with_first_use_steps(loader, loader.build)
    note = None
    try:
        info = loader.load(folder).info
        version, used, threads = info.runtime_version, info.precision_used, info.threads
    except PredictionNeedsMacOS as exc:  # converted, but this OS cannot run it
        note = str(exc)
        version, used, threads = exc.info.runtime_version, exc.info.precision_used, args.threads
    seconds = time.perf_counter() - start
    shown = str(folder)
    if args.output is not None:
        with atomic_path(args.output, directory=True, may_replace=is_engine_folder) as tmp:
            shutil.copytree(folder, tmp, dirs_exist_ok=True)
        shown = str(args.output)
    elif args.no_cache:
        shown += " (scratch: removed on exit; --output keeps a copy)"
    print_table(
        "engine",
        ("runtime", "version", "precision", "precision used", "threads", "shapes", "build+load s", "engine"),
        [(args.runtime, version, source_precision(args.precision).value, used, threads or "-", str(shapes), f"{seconds:.1f}", shown)],
    )
    if note:
        where = f"; the converted engine is in {args.output}" if args.output is not None else ""
        stderr.print(f"note: {note.split(';')[0] if where else note}{where}", markup=False)
    elif used != "-" and precision_differs(args.precision, used):
        stderr.print(f"warning: asked for {args.precision}, {args.runtime} ran {used} on this CPU", markup=False)
    return 0


def source_precision(text: str):
    from elan_deploy.runtimes import Precision

    return Precision.parse(text)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help="build an engine for one runtime and precision (cached)")
    add_model_args(p)
    add_engine_args(p)
    p.add_argument("--output", type=Path, help="also copy the engine folder here (a new or empty folder, or an earlier build's)")
    p.set_defaults(handler=run_build)
