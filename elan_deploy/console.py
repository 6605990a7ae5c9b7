"""Terminal output: progress bars on stderr, result tables on stdout."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

# Wide tables stay readable when piped to a file or a CI log (rich assumes 80 columns there).
stdout = Console() if Console().is_terminal else Console(width=200)
stderr = Console(stderr=True)


def progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=stderr, transient=True,
    )


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
