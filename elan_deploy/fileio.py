"""Atomic artifact writes, and the clean-up of what a killed process left behind.

Every artifact (ONNX file, engine, JSON, image) is written to a temporary sibling and renamed
into place, so a crash or an exception never leaves a half-written file where a cache or a
user would take it for a good one.

Temporary names carry a marker and the writer's process id (`.model.onnx.elan-tmp-4242-x1y2.tmp.onnx`):
a process killed with SIGKILL cannot clean up after itself, so the next writer of the same
target removes the temporaries whose process is gone. Nothing without the marker is ever
removed, so files the user made are never touched.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from elan_deploy import faults
from elan_deploy.errors import ElanDeployError

TMP_MARK = "elan-tmp-"


def current_umask() -> int:
    """The process umask, read without changing it (os.umask would race with other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    except OSError:
        return False
    return True


def _writer_pid(name: str) -> int | None:
    """The pid recorded in a temporary's name, or None when the name is not ours."""
    _, mark, rest = name.partition(TMP_MARK)
    digits = rest.split("-", 1)[0]
    return int(digits) if mark and digits.isdigit() else None


def remove_stale_temps(folder: Path, prefix: str = ".") -> int:
    """Remove the temporaries under `folder` starting with `prefix` whose writer has died."""
    removed = 0
    try:
        candidates = [p for p in folder.iterdir() if p.name.startswith(prefix) and TMP_MARK in p.name]
    except OSError:
        return 0
    for path in candidates:
        pid = _writer_pid(path.name)
        if pid is None or pid == os.getpid() or process_alive(pid):
            continue
        with contextlib.suppress(OSError):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed += 1
    return removed


def blocking_file(folder: Path) -> Path | None:
    """The file standing where `folder` or one of its parents must be a folder (`file/sub`), if any."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


def missing_folder_error(folder: Path, what: str = "output folder") -> ElanDeployError:
    """The one-line error for a folder that cannot hold a new file: a file is in the way, or it is missing."""
    if (blocker := blocking_file(folder)) is not None:
        return ElanDeployError(f"{what} '{folder}' cannot be created: '{blocker}' is a file, not a folder; choose another path")
    return ElanDeployError(f"{what} '{folder}' does not exist; create it or choose another path")


def _writable_parent(path: Path) -> Path:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise missing_folder_error(parent)
    if not os.access(parent, os.W_OK):
        raise ElanDeployError(f"output folder '{parent}' is not writable; choose another output path")
    return parent


def _fsync_tree(folder: Path) -> None:
    for item in folder.rglob("*"):
        if item.is_file():
            with open(item, "rb") as f:
                os.fsync(f.fileno())


def _publish_directory(tmp: Path, path: Path, may_replace: Callable[[Path], bool] | None) -> None:
    """Rename `tmp` onto `path`; an existing `path` is replaced only when `may_replace` says so."""
    empty_folder = path.is_dir() and not path.is_symlink() and not any(path.iterdir())
    if empty_folder or (not path.exists() and not path.is_symlink()):
        try:
            os.rename(tmp, path)  # fails if a folder appeared meanwhile: never merges into it
            return
        except OSError:
            if not path.exists():
                raise
    if may_replace is None or not may_replace(path):
        raise ElanDeployError(
            f"'{path}' exists and was not written by elan-deploy; it was left as it is: choose a new output path"
        )
    trash = Path(tempfile.mkdtemp(prefix=f".{path.name}.{TMP_MARK}{os.getpid()}-", suffix=".old", dir=path.parent))
    os.rename(path, trash / "old")
    os.rename(tmp, path)
    shutil.rmtree(trash, ignore_errors=True)


LOW_DISK_BYTES = 1 << 20


def _raise_if_disk_full(folder: Path, exc: Exception) -> None:
    """Name a full disk as such: runtimes report it as e.g. "basic_ios::clear: iostream error"."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if free < LOW_DISK_BYTES:
        raise OSError(errno.ENOSPC, f"No space left on device ({free} bytes free)", str(folder)) from exc


@contextlib.contextmanager
def atomic_path(
    path: Path | str, *, directory: bool = False, may_replace: Callable[[Path], bool] | None = None
) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds.

    A file target is replaced (the caller decided it may be). A folder target (`.mlpackage`
    bundles, engine folders) that already exists is replaced only when `may_replace(path)`
    returns True (e.g. it holds an engine this tool wrote); otherwise nothing is removed and a
    one-line error says so. Temporaries left by killed writers of the same target are removed.
    """
    path = Path(os.path.abspath(path))  # "." and ".." get a real name and parent
    parent = _writable_parent(path)
    remove_stale_temps(parent, f".{path.name}.")
    prefix = f".{path.name}.{TMP_MARK}{os.getpid()}-"
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=f".tmp{path.suffix}", dir=parent)
        os.close(fd)
        tmp = Path(name)
    try:
        try:
            yield tmp
        except Exception as exc:
            _raise_if_disk_full(parent, exc)
            raise
        faults.point(f"publish:{path.name}")
        if directory:
            _fsync_tree(tmp)
            os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700; artifacts get the user's umask
            _publish_directory(tmp, path, may_replace)
        else:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600
            os.replace(tmp, path)
    finally:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def file_sha256(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_bytes_atomic(path: Path | str, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: Path | str, obj: Any) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def check_writable_file(path: Path | str, what: str = "output") -> Path:
    """Fail before any work when `path` cannot be written (missing or read-only folder, a folder)."""
    path = Path(path)
    if path.is_dir():
        raise ElanDeployError(f"{what} '{path}' is a folder; pass a file path")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise missing_folder_error(parent, f"{what} folder")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ElanDeployError(f"{what} '{path}' is not writable; choose another path")
    return path
