"""Where the toolkit keeps what it writes for itself: the cache root and scratch folders.

`$ELAN_DEPLOY_CACHE` (or `~/.cache/elan-deploy`) holds everything the cache writes: engines,
exported ONNX files, calibration patches, locks. Scratch folders (calibration temporaries,
`--no-cache` builds) carry their process id in their name, are removed when their process
exits, and the next process removes those whose process was killed before it could.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from elan_deploy.fileio import TMP_MARK, remove_stale_temps

CACHE_ENV = "ELAN_DEPLOY_CACHE"


def cache_root() -> Path:
    """`$ELAN_DEPLOY_CACHE`, else `$XDG_CACHE_HOME/elan-deploy` or `~/.cache/elan-deploy`."""
    if env := os.environ.get(CACHE_ENV):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "elan-deploy"


def _new_scratch(prefix: str, parent: Path | None) -> Path:
    parent = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(parent, f"{prefix}-")
    return Path(tempfile.mkdtemp(prefix=f"{prefix}-{TMP_MARK}{os.getpid()}-", dir=parent))


@contextlib.contextmanager
def temporary_dir(prefix: str, parent: Path | None = None) -> Iterator[Path]:
    """A scratch folder for the block, removed after it (and by the next run if killed)."""
    path = _new_scratch(prefix, parent)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def process_scratch_dir(prefix: str = "elan-deploy", parent: Path | None = None) -> Path:
    """A scratch folder that lives until the process exits (e.g. a `--no-cache` engine cache)."""
    path = _new_scratch(prefix, parent)
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path
