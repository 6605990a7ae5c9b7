"""The per-input contract: input errors fail the input, bugs stop the run, the summary names each failure."""

from __future__ import annotations

import pytest

from elan_deploy.batch.results import BatchSummary, FileResult, Status, run_guarded
from elan_deploy.errors import ImageError, NonFiniteOutput, WorkFailed


def test_input_errors_fail_the_input_and_bugs_stop_the_run() -> None:
    def corrupt():
        raise ImageError("cannot read image 'x.png': file is truncated")

    def nan():
        raise NonFiniteOutput("image has 3 NaN/Inf value(s)")

    def oom():
        raise MemoryError()

    assert run_guarded("x.png", "o.png", corrupt) == FileResult("x.png", "o.png", Status.FAILED, "cannot read image 'x.png': file is truncated")
    assert run_guarded("x.png", "o.png", nan).status is Status.FAILED
    assert "smaller --tile" in run_guarded("x.png", "o.png", oom).reason
    assert run_guarded("x.png", "o.png", lambda: ("alpha dropped",)).notes == ("alpha dropped",)
    with pytest.raises(ZeroDivisionError):  # a bug is not a bad file
        run_guarded("x.png", "o.png", lambda: 1 / 0)


def test_summary_names_each_failure_and_exits_one() -> None:
    summary = BatchSummary([
        FileResult("a.png", "o/a.png", Status.DONE),
        FileResult("b.png", "o/b.png", Status.SKIPPED),
        FileResult("c.png", "o/c.png", Status.FAILED, "corrupt"),
    ])
    lines: list[str] = []
    with pytest.raises(WorkFailed) as failed:
        summary.finish(lines.append, "o")
    assert failed.value.exit_code == 1 and "c.png" in str(failed.value)
    assert lines == ["failed: c.png: corrupt", "3 input(s): 1 done, 1 skipped (complete output exists), 1 failed; outputs in o"]
    assert BatchSummary([FileResult("a.png", "o/a.png", Status.DONE)]).finish(lines.append, "o") == 0
    row = FileResult("a.png", "o/a.png", Status.FAILED, "bad", ("n1", "n2"))
    assert FileResult.from_row(row.to_row()) == row
