"""Plain progress lines for logs: each step, and a throttled heartbeat."""

from __future__ import annotations

from elan_deploy.console import PlainProgress


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_plain_progress_prints_each_step_and_a_throttled_heartbeat(capsys) -> None:
    clock = _Clock()
    bar = PlainProgress(every_s=30, min_gap_s=1, clock=clock)  # no `with`: the ticker thread stays off, the clock is ours
    task = bar.add_task("bench", total=4)
    clock.now = 5
    bar.update(task, description="onnxruntime fp32: build")
    clock.now = 5.5
    bar.update(task, description="onnxruntime fp32: quality Set5")  # within the gap: held back
    for i in range(3):  # advancing without a new step prints nothing until the heartbeat is due
        clock.now = 10 + i
        bar.advance(task)
    clock.now = 75
    bar.update(task, description="onnxruntime fp32: quality Set5")
    bar.advance(task)
    bar.stop()
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "[0:00] bench  0/4 (0 %)",
        "[0:05] onnxruntime fp32: build  0/4 (0 %)",
        "[0:10] onnxruntime fp32: quality Set5  1/4 (25 %)",
        "[1:15] onnxruntime fp32: quality Set5  3/4 (75 %)",
        "[1:15] onnxruntime fp32: quality Set5  4/4 (100 %)  done",
    ]


def test_a_step_without_a_total_ends_done_unless_an_error_ends_it(capsys) -> None:
    """An engine build has no count: its line ends "done" when it returns, "stopped" when it raises."""
    clock = _Clock()
    ok = PlainProgress(clock=clock)
    ok.add_task("build onnxruntime int8 engine", total=None)
    clock.now = 65
    ok.__exit__(None, None, None)
    failed = PlainProgress(clock=clock)
    failed.add_task("build openvino int8 engine", total=None)
    failed.__exit__(RuntimeError, RuntimeError("no"), None)
    counted = PlainProgress(clock=clock)
    task = counted.add_task("upscale", total=4)
    counted.advance(task)
    counted.__exit__(None, None, None)
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "[0:00] build onnxruntime int8 engine",
        "[1:05] build onnxruntime int8 engine  done",
        "[0:00] build openvino int8 engine",
        "[0:00] build openvino int8 engine  stopped",
        "[0:00] upscale  0/4 (0 %)",
        "[0:00] upscale  1/4 (25 %)  stopped",
    ]
