"""Terminal output: progress on stderr, result tables on stdout.

Progress is a live rich bar in a terminal. Where stderr is not a terminal (CI logs, `> file`),
a live bar prints nothing useful until it ends, so `progress()` returns `PlainProgress`, which
prints plain, throttled lines instead: what is being done, how far, and the elapsed time.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, TextIO

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

# Wide tables stay readable when piped to a file or a CI log (rich assumes 80 columns there).
stdout = Console() if Console().is_terminal else Console(width=200)
# Messages on stderr are single lines: a log keeps each one whole instead of wrapping it at 80 columns.
stderr = Console(stderr=True, soft_wrap=True)


def interactive() -> bool:
    """True when stderr is a terminal, where live progress views can redraw in place."""
    return stderr.is_terminal


def progress() -> Progress | PlainProgress:
    """A progress display with rich's API subset `add_task`, `advance`, `update`, used as a context manager."""
    if not interactive():
        return PlainProgress()
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=stderr, transient=True,
    )


@contextlib.contextmanager
def quiet_library_progress() -> Iterator[None]:
    """Silence what libraries draw on rich's global console (NNCF's `track` bars) and NNCF's INFO log.

    In a non-interactive run those bars land in the log as final-state lines that say nothing
    about which engine is being built; our progress lines say that. Our own consoles are separate
    objects and keep printing. Everything is restored on exit.
    """
    import logging

    import rich

    global_console = rich.get_console()
    saved = dict(global_console.__dict__)  # `rich.reconfigure` changes the global console in place
    nncf_log = logging.getLogger("nncf")
    level = nncf_log.level
    rich.reconfigure(quiet=True)
    nncf_log.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        global_console.__dict__ = saved
        nncf_log.setLevel(level)


class StepProgress(Protocol):
    """Where slow work reports what it does: a step started (total None: unknown), then how far it got.

    A new `start` ends the step before it (a checkpoint's range calibration, an engine's first
    build, then the work). The library reports here and prints nothing itself."""

    def start(self, description: str, total: int | None) -> None: ...

    def update(self, completed: int | None = None, total: int | None = None, description: str | None = None) -> None: ...


class NoProgress:
    """A `StepProgress` that shows nothing."""

    def start(self, description: str, total: int | None) -> None:
        return None

    def update(self, completed: int | None = None, total: int | None = None, description: str | None = None) -> None:
        return None


class LiveSteps:
    """A `StepProgress` on the live progress view (plain lines in a log), opened at the first step
    and closed with `stack`: where no step starts, nothing is drawn."""

    def __init__(self, stack: contextlib.ExitStack) -> None:
        self.stack, self.bar, self.task = stack, None, None

    def start(self, description: str, total: int | None) -> None:
        if self.bar is None:
            self.bar = self.stack.enter_context(progress())
        elif self.task is not None:
            self.bar.remove_task(self.task)  # the step before is over
        self.task = self.bar.add_task(description, total=total)

    def update(self, completed: int | None = None, total: int | None = None, description: str | None = None) -> None:
        changes = {k: v for k, v in (("completed", completed), ("total", total), ("description", description)) if v is not None}
        self.bar.update(self.task, **changes)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@dataclass
class _Task:
    description: str
    total: float | None
    completed: float = 0.0
    printed: tuple[str, float] | None = None  # (description, completed) of the last line printed
    finished: bool = False


class PlainProgress:
    """rich.progress.Progress's `add_task`/`advance`/`update` as plain lines for logs.

    A line is printed when a task's description changes (the step: which cell, which phase),
    and otherwise every `every_s` seconds while it advances or stays on one long step, never
    more often than one line per `min_gap_s`: a log gets each phase and a heartbeat, not one
    line per image. A change that arrives within the gap is printed when the gap has passed.
    Each line reads `[elapsed] description  done/total (pct)`.
    """

    def __init__(
        self, file: TextIO | None = None, every_s: float = 30.0, min_gap_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._file = file
        self.every_s = every_s
        self.min_gap_s = min_gap_s
        self._clock = clock
        self._tasks: dict[int, _Task] = {}
        self._lock = threading.RLock()
        self._start = clock()
        self._last_line = float("-inf")
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    @property
    def file(self) -> TextIO:
        return self._file or sys.stderr  # looked up late: tests and callers may swap sys.stderr

    # rich-compatible API -------------------------------------------------
    def add_task(self, description: str, total: float | None = 100.0, completed: float = 0, **_: object) -> int:
        with self._lock:
            task_id = len(self._tasks)
            self._tasks[task_id] = _Task(description, total, completed)
            self._maybe_print(task_id)
            return task_id

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def update(
        self, task_id: int, *, description: str | None = None, total: float | None = None, completed: float | None = None,
        advance: float | None = None, **_: object,
    ) -> None:
        with self._lock:
            task = self._tasks[task_id]
            if description is not None:
                task.description = description
            if total is not None:
                task.total = total
            if completed is not None:
                task.completed = completed
            if advance:
                task.completed += advance
            self._maybe_print(task_id)

    def remove_task(self, task_id: int) -> None:
        with self._lock:
            self._tasks.pop(task_id, None)

    def start(self) -> None:
        if self._ticker is None:
            self._ticker = threading.Thread(target=self._tick, name="plain-progress", daemon=True)
            self._ticker.start()

    def stop(self, failed: bool = False) -> None:
        """End every open task's line: "done" when it reached its total, or when a task with no
        total (one long step) ends without an error; "stopped" otherwise."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=5)
        with self._lock:
            for task_id, task in self._tasks.items():
                if not task.finished:
                    done = self._complete(task) or (task.total is None and not failed)
                    self._print(task_id, "done" if done else "stopped")

    def __enter__(self) -> PlainProgress:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self.stop(failed=exc_type is not None)

    # printing ------------------------------------------------------------
    @staticmethod
    def _complete(task: _Task) -> bool:
        return task.total is not None and task.completed >= task.total

    def _due(self, task: _Task, now: float) -> bool:
        if now - self._last_line < self.min_gap_s:
            return False
        if task.printed is None or task.printed[0] != task.description:
            return True
        return now - self._last_line >= self.every_s

    def _maybe_print(self, task_id: int) -> None:
        task = self._tasks[task_id]
        if not task.finished and self._due(task, self._clock()):
            self._print(task_id)

    def _print(self, task_id: int, status: str = "") -> None:
        task = self._tasks[task_id]
        now = self._clock()
        how_far = ""
        if task.total:
            how_far = f"  {task.completed:g}/{task.total:g} ({100 * task.completed / task.total:.0f} %)"
        same = task.printed is not None and task.printed == (task.description, task.completed) and not status
        line = f"[{_clock(now - self._start)}] {task.description}{how_far}{'  (still running)' if same else ''}"
        if status:
            line += f"  {status}"
            task.finished = True
        print(line, file=self.file, flush=True)
        task.printed = (task.description, task.completed)
        self._last_line = now

    def _tick(self) -> None:
        """Print changes held back by the gap, and a heartbeat while one step runs for long."""
        while not self._stop.wait(min(self.min_gap_s, 1.0)):
            with self._lock:
                for task_id in list(self._tasks):
                    self._maybe_print(task_id)


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="left" if col in columns[:1] else "right")
    for row in rows:
        # escape: cell text such as "pip install 'elan-deploy[tensorrt]'" is not rich markup
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else escape(str(v)) for v in row))
    stdout.print(table)


def fmt(value: object, digits: int, suffix: str = "") -> str:
    """A table cell: numbers to `digits` decimals, "–" for a value that was not measured."""
    if value is None:
        return "–"
    return f"{value:.{digits}f}{suffix}" if isinstance(value, (int, float)) else str(value)
