"""`elan-deploy build`: build (or find in the cache) one runtime × precision engine."""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from elan_deploy.commands.common import add_engine_args, add_model_args, engine_from_args
from elan_deploy.console import print_table
from elan_deploy.fileio import atomic_path


def run_build(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    _, engine, shapes = engine_from_args(args)
    seconds = time.perf_counter() - start
    info = engine.info
    folder = info.details.get("engine", "")
    if args.output and folder:
        with atomic_path(args.output, directory=True) as tmp:
            shutil.copytree(folder, tmp, dirs_exist_ok=True)
        folder = str(args.output)
    elif args.no_cache and folder:
        folder += " (scratch: removed on exit; --output keeps a copy)"
    print_table(
        "engine",
        ("runtime", "version", "precision", "precision used", "threads", "shapes", "build+load s", "engine"),
        [(info.runtime, info.runtime_version, info.precision.value, info.precision_used, info.threads or "-", str(shapes), f"{seconds:.1f}", folder or "-")],
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help="build an engine for one runtime and precision (cached)")
    add_model_args(p)
    add_engine_args(p)
    p.add_argument("--output", type=Path, help="also copy the engine folder here")
    p.set_defaults(handler=run_build)
