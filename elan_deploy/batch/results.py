"""The one per-input result contract for folders, Ray and video.

Whatever drives the work (a loop over a folder, Ray Data actors, the video pipeline), each input
ends as one `FileResult`: done, skipped (its complete output already exists) or failed with a
one-line reason. `run_guarded` is the single place that decides which exceptions mean "this input
failed, go on with the next" and `BatchSummary.finish` the single place that turns a batch into
the summary lines and the exit code (1 when any input failed; 2 stays for bad usage, raised
before any work).
"""

from __future__ import annotations

import enum
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from elan_deploy.errors import ElanDeployError, WorkFailed


class Status(str, enum.Enum):
    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(frozen=True)
class FileResult:
    """What became of one input. `notes` are warnings worth showing (an alpha channel dropped)."""

    source: str
    output: str
    status: Status
    reason: str = ""
    notes: tuple[str, ...] = ()

    def to_row(self) -> dict[str, str]:
        """A flat row of strings, as Ray Data carries it between processes."""
        return {"source": self.source, "output": self.output, "status": self.status.value,
                "reason": self.reason, "notes": "\n".join(self.notes)}

    @classmethod
    def from_row(cls, row: dict[str, object]) -> FileResult:
        notes = str(row.get("notes") or "")
        return cls(str(row["source"]), str(row["output"]), Status(str(row["status"])), str(row.get("reason") or ""),
                   tuple(n for n in notes.split("\n") if n))


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def failure_reason(exc: BaseException) -> str | None:
    """The one-line reason an input failed, or None when the exception is not about one input.

    Input-level failures: anything the toolkit raises as a user-facing error (an unreadable or
    corrupt image, a NaN/Inf engine output, an output that cannot be written), an out-of-memory
    on one image, and an OS error on one file. Anything else is a bug or an interrupt and must
    stop the run rather than be counted as a bad file.
    """
    if isinstance(exc, ElanDeployError):
        return _one_line(exc)
    if isinstance(exc, MemoryError):
        return "out of memory while upscaling it; pass a smaller --tile"
    if isinstance(exc, OSError):
        detail = exc.strerror or (os.strerror(exc.errno) if exc.errno else str(exc))
        return _one_line(f"{detail} ({exc.filename})" if exc.filename else detail)
    return None


def run_guarded(source: Path | str, output: Path | str, work: Callable[[], tuple[str, ...] | None]) -> FileResult:
    """Run `work` for one input and turn its outcome into a FileResult (notes from its return)."""
    try:
        notes = work() or ()
    except Exception as exc:  # noqa: BLE001 - failure_reason decides; the rest is re-raised
        reason = failure_reason(exc)
        if reason is None:
            raise
        return FileResult(str(source), str(output), Status.FAILED, reason)
    return FileResult(str(source), str(output), Status.DONE, notes=tuple(notes))


def skipped(source: Path | str, output: Path | str) -> FileResult:
    return FileResult(str(source), str(output), Status.SKIPPED, "complete output exists")


@dataclass
class BatchSummary:
    """All results of one run; prints the summary and sets the exit code."""

    results: list[FileResult] = field(default_factory=list)

    def add(self, result: FileResult) -> FileResult:
        self.results.append(result)
        return result

    def extend(self, results: Iterable[FileResult]) -> None:
        self.results.extend(results)

    @property
    def counts(self) -> Counter[Status]:
        return Counter(r.status for r in self.results)

    @property
    def failed(self) -> list[FileResult]:
        return [r for r in self.results if r.status is Status.FAILED]

    def line(self, what: str = "input") -> str:
        c = self.counts
        return (f"{len(self.results)} {what}(s): {c[Status.DONE]} done, {c[Status.SKIPPED]} skipped "
                f"(complete output exists), {c[Status.FAILED]} failed")

    def finish(self, print_line: Callable[[str], None], where: str, what: str = "input", left_out: str | None = None) -> int:
        """Print notes, each failed input with its reason, what was not an input (`left_out`), then
        the counts; 0, or WorkFailed (exit 1)."""
        for result in self.results:
            for note in result.notes:
                print_line(f"warning: {note}")
        for result in self.failed:
            print_line(f"failed: {result.source}: {result.reason}")
        if left_out:
            print_line(left_out)
        failed = self.failed
        written = not failed or len(failed) < len(self.results)  # some output exists: never name one that does not
        print_line(f"{self.line(what)}; " + (f"outputs in {where}" if written else "nothing was written"))
        if failed:
            names: Sequence[str] = [Path(r.source).name for r in failed]
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            raise WorkFailed(
                f"{len(failed)} of {len(self.results)} {what}(s) failed ({shown}; reasons above); "
                + ("every other output was written, and a rerun skips the complete ones" if written else "nothing was written")
            )
        return 0
