"""Atomic artifact writes.

Every artifact (ONNX file, engine, JSON, image) is written to a temporary sibling and renamed
into place, so a crash or an exception never leaves a half-written file where a cache or a
user would take it for a good one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from elan_deploy.errors import ElanDeployError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _writable_parent(path: Path) -> Path:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ElanDeployError(f"output folder '{parent}' does not exist; create it or choose another output path")
    if not os.access(parent, os.W_OK):
        raise ElanDeployError(f"output folder '{parent}' is not writable; choose another output path")
    return parent


@contextlib.contextmanager
def atomic_path(path: Path | str, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds.

    With `directory=True` the temporary path is a folder (for `.mlpackage` bundles and
    OpenVINO IR pairs); an existing target folder is replaced.
    """
    path = Path(path)
    parent = _writable_parent(path)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if directory:
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
        else:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts get normal permissions
            os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_bytes_atomic(path: Path | str, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: Path | str, obj: Any) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())
