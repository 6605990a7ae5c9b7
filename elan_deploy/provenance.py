"""Which files elan-deploy wrote: the one rule every writer checks before replacing a file.

A command never replaces a file it did not write unless the user passes --overwrite, and a rerun
of the same command must still replace what the first run wrote. "Wrote" is read from the file
itself, never from its name or mtime (copying or touching a file changes those, not its content):

- A JSON document of this toolkit opens with its schema, `{"schema": "elan-deploy/...", ...}`
  (results, diff, int8, export and info reports, and the records below).
- An ONNX file carries the export's `metadata_props` (`model_id`, `window_multiple`), which
  `export` and `quantize` write and every runtime reads back.
- Every other file (Polygraphy's inputs/outputs JSON, plots, BMP images, videos) gets a hidden
  record beside it, `.NAME.elan-deploy.json`, holding the sha256 and size of the bytes written
  and an optional tag (what produced it). The file counts as ours only while its content
  matches a record: a file the user put in its place, or edited, does not.

A record written after its file leaves a moment (a kill between the two renames) in which a
complete output has no record yet; a rerun then refuses it, which is safe. `recorded_path`
closes that gap for writers that go through it: the record is published first and keeps the
previous file's entry until the new file is in place, so whichever file is at the name when a
run dies still matches.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from elan_deploy.errors import ElanDeployError
from elan_deploy.fileio import atomic_path, check_writable_file, file_sha256, write_json_atomic

SCHEMA_PREFIX = "elan-deploy/"
RECORD_SCHEMA = "elan-deploy/provenance/1"
RECORD_SUFFIX = ".elan-deploy.json"
ONNX_MARKER_KEYS = frozenset({"model_id", "window_multiple"})

_SCHEMA_HEAD = re.compile(rb'\s*\{\s*"schema"\s*:\s*"' + re.escape(SCHEMA_PREFIX.encode()))
_HEAD_BYTES = 4096


@dataclass(frozen=True)
class Record:
    """What one write put at a path: its bytes' sha256 and size, and the writer's tag."""

    sha256: str
    size: int
    tag: Mapping[str, Any] | None = field(default=None, compare=False)

    @classmethod
    def of(cls, path: Path, tag: Mapping[str, Any] | None = None) -> Record:
        return cls(file_sha256(path), path.stat().st_size, dict(tag) if tag is not None else None)


def record_path(path: Path | str) -> Path:
    """The hidden record beside `path`: a.bmp -> .a.bmp.elan-deploy.json."""
    path = Path(path)
    return path.with_name(f".{path.name}{RECORD_SUFFIX}")


def _read_records(path: Path) -> list[Record]:
    try:
        doc = json.loads(record_path(path).read_text())
        if doc.get("schema") != RECORD_SCHEMA or doc.get("file") != path.name:
            return []
        return [Record(str(r["sha256"]), int(r["size"]), r.get("tag")) for r in doc["records"]]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return []


def matching_record(path: Path | str) -> Record | None:
    """The record of the bytes now at `path`, or None (no record, or the file changed since)."""
    path = Path(path)
    records = _read_records(path)
    try:
        if not records or not path.is_file():
            return None
        size = path.stat().st_size
        candidates = [r for r in records if r.size == size]
        digest = file_sha256(path) if candidates else None
    except OSError:
        return None
    return next((r for r in candidates if r.sha256 == digest), None)


def _write_records(path: Path, records: list[Record]) -> None:
    write_json_atomic(record_path(path), {
        "schema": RECORD_SCHEMA, "file": path.name,
        "records": [{k: v for k, v in asdict(r).items() if v is not None} for r in records],
    })


def record_file(path: Path | str, tag: Mapping[str, Any] | None = None) -> Record:
    """Record the file a writer just put at `path` (for writers that publish it themselves)."""
    path = Path(path)
    record = Record.of(path, tag)
    _write_records(path, [record])
    return record


@contextlib.contextmanager
def recorded_path(path: Path | str, tag: Mapping[str, Any] | None = None) -> Iterator[Path]:
    """`atomic_path` that also records the new file; the record lands first and keeps the old entry."""
    path = Path(path)
    with atomic_path(path) as tmp:
        yield tmp
        new = Record.of(tmp, tag)
        old = matching_record(path)
        kept = [old] if old is not None and old != new else []
        _write_records(path, [new, *kept])
    if kept:  # the new file is in place: the old one's entry has done its job
        _write_records(path, [new])


def _json_marker(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD_BYTES)
    except OSError:
        return False
    return _SCHEMA_HEAD.match(head.removeprefix(b"\xef\xbb\xbf")) is not None


def _onnx_marker(path: Path) -> bool:
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - anything unreadable is simply not ours
        return False
    return ONNX_MARKER_KEYS <= {p.key for p in model.metadata_props}


def carries_marker(path: Path | str) -> bool:
    """A JSON document or ONNX file that says in its own content that this toolkit wrote it."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        return _json_marker(path)
    if suffix == ".onnx":
        return _onnx_marker(path)
    return False


def written_by_elan_deploy(path: Path | str) -> bool:
    """True for a regular file this toolkit wrote and nobody changed since (see the module doc)."""
    path = Path(path)
    if path.is_symlink() or not path.is_file():
        return False
    return matching_record(path) is not None or carries_marker(path)


def check_output_file(path: Path | str, what: str, overwrite: bool = False) -> Path:
    """Fail before any work when `path` cannot be written, or holds a file this toolkit did not write.

    `what` names the output the way the user gave it (a flag such as `--json`). With `overwrite`
    any writable file may be replaced.
    """
    path = check_writable_file(path, what)
    exists = path.exists() or path.is_symlink()
    if exists and not overwrite and not written_by_elan_deploy(path):
        raise ElanDeployError(
            f"{what} '{path}' exists and elan-deploy did not write it; it was left as it is: "
            "choose another path, or pass --overwrite to replace it"
        )
    return path



def write_document(path: Path | str, doc: Mapping[str, Any]) -> None:
    """Write one of this toolkit's JSON documents (results, diff, INT8, load test, export, info) atomically.

    The schema goes first: that is how `check_output_file` knows the file as this toolkit's own
    on a later run, so a document without an `elan-deploy/...` schema is a bug, refused here.
    """
    schema = doc.get("schema")
    if not (isinstance(schema, str) and schema.startswith(SCHEMA_PREFIX)):
        raise ValueError(f"a document needs a schema starting with '{SCHEMA_PREFIX}', got {schema!r}")
    write_json_atomic(path, {"schema": schema, **doc})
