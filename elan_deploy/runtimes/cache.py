"""On-disk engine cache keyed by (model fingerprint, precision, shapes, runtime + version, file options).

Each entry is a folder written atomically with a manifest that records the sha256 of every
engine file, so a file corrupted on disk is detected at load and the entry rebuilt instead of
crashing a runtime (or, worse, running a half-written plan).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

from elan_deploy.fileio import atomic_path
from elan_deploy.model.checkpoint import file_sha256

CACHE_ENV = "ELAN_DEPLOY_CACHE"
MANIFEST = "manifest.json"


def default_cache_dir() -> Path:
    if env := os.environ.get(CACHE_ENV):
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "elan-deploy" / "engines"


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


def entry_is_intact(entry: Path) -> bool:
    manifest = entry / MANIFEST
    try:
        recorded = json.loads(manifest.read_text())["files"]
    except (OSError, ValueError, KeyError):
        return False
    return bool(recorded) and recorded == _hash_tree(entry)


class EngineCache:
    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root else default_cache_dir()

    def entry(self, key: CacheKey) -> Path:
        return self.root / key.runtime / key.digest()

    def lookup(self, key: CacheKey) -> Path | None:
        entry = self.entry(key)
        if not entry.exists():
            return None
        if entry_is_intact(entry):
            return entry
        warnings.warn(f"engine cache entry {entry} is corrupt (hash mismatch); rebuilding it", stacklevel=2)
        shutil.rmtree(entry, ignore_errors=True)
        return None

    def store(self, key: CacheKey, build) -> Path:
        """Run `build(folder)` into a temporary folder and publish it with its manifest."""
        entry = self.entry(key)
        entry.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(entry, directory=True) as tmp:
            build(tmp)
            (tmp / MANIFEST).write_text(json.dumps({"key": key.__dict__, "files": _hash_tree(tmp)}, indent=2))
        return entry
