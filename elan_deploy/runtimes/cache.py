"""On-disk engine cache keyed by (model fingerprint, precision, shapes, runtime + version, file options).

Each entry is a folder written atomically with a manifest that records the sha256 of every
engine file, and of the ONNX file it was built from, so a file corrupted on disk (or an engine
built from an ONNX that has since changed) is detected at lookup and the entry rebuilt instead
of crashing a runtime or, worse, running a wrong engine.

Entries are published under a per-entry file lock: concurrent builders of the same entry wait
for the first one and reuse its result, and publishing never removes an intact entry another
process may be reading (only a corrupt or stale one, and only under the lock).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from elan_deploy import faults
from elan_deploy.fileio import atomic_path, file_sha256
from elan_deploy.scratch import CACHE_ENV, cache_root

__all__ = ["CACHE_ENV", "MANIFEST", "CacheKey", "EngineCache", "default_cache_dir", "entry_is_intact"]

MANIFEST = "manifest.json"
MANIFEST_SCHEMA = "elan-deploy/engine/1"


def default_cache_dir() -> Path:
    """The engines folder inside the cache root (`$ELAN_DEPLOY_CACHE/engines`)."""
    return cache_root() / "engines"


@dataclass(frozen=True)
class CacheKey:
    fingerprint: str
    precision: str
    shapes: str
    runtime: str
    runtime_version: str
    options: str

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.__dict__, sort_keys=True).encode()).hexdigest()[:24]


def _hash_tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): file_sha256(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def read_manifest(entry: Path) -> dict | None:
    try:
        manifest = json.loads((entry / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and isinstance(manifest.get("files"), dict) else None


def entry_is_intact(entry: Path) -> bool:
    manifest = read_manifest(entry)
    return manifest is not None and bool(manifest["files"]) and manifest["files"] == _hash_tree(entry)


def is_engine_folder(folder: Path) -> bool:
    """True for a folder this tool wrote as an engine (cache entry or `build --output` copy)."""
    manifest = read_manifest(folder)
    return manifest is not None and isinstance(manifest.get("key"), dict)


class EngineCache:
    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root else default_cache_dir()

    def entry(self, key: CacheKey) -> Path:
        return self.root / key.runtime / key.digest()

    def _lock(self, key: CacheKey) -> FileLock:
        folder = self.root / key.runtime
        folder.mkdir(parents=True, exist_ok=True)
        return FileLock(str(folder / f".{key.digest()}.lock"))

    def _usable(self, entry: Path, source_onnx: str | None) -> bool:
        if not entry_is_intact(entry):
            return False
        built_from = (read_manifest(entry) or {}).get("source_onnx_sha256")
        return source_onnx is None or built_from is None or built_from == source_onnx

    def lookup(self, key: CacheKey, source_onnx: str | None = None) -> Path | None:
        """The entry when it is intact (and was built from `source_onnx`, when given)."""
        entry = self.entry(key)
        return entry if entry.exists() and self._usable(entry, source_onnx) else None

    def store(
        self, key: CacheKey, build: Callable[[Path], None], source_onnx: Callable[[], str | None] = lambda: None
    ) -> Path:
        """Build the entry into a temporary folder and publish it with its manifest.

        Under the entry's lock: if another process published a usable entry meanwhile, that one
        is returned and nothing is built; a corrupt or stale entry is replaced.
        """
        entry = self.entry(key)
        with self._lock(key):
            onnx_digest = None
            if entry.exists():
                onnx_digest = source_onnx()
                if self._usable(entry, onnx_digest):
                    return entry
                warnings.warn(f"engine cache entry {entry} is corrupt or stale (hash mismatch); rebuilding it", stacklevel=2)
            with atomic_path(entry, directory=True, may_replace=lambda _: True) as tmp:
                faults.point(f"build:{key.runtime}")
                build(tmp)
                manifest = {"schema": MANIFEST_SCHEMA, "key": key.__dict__, "files": _hash_tree(tmp)}
                if (onnx_digest := onnx_digest or source_onnx()) is not None:
                    manifest["source_onnx_sha256"] = onnx_digest
                (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        return entry
