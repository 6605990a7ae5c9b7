"""Latency rounds and statistics, and the CPU load that disturbs them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from elan_deploy.bench.latency import CpuLoad, LatencyConfig, LatencyStats


def test_round_budgets_keep_the_minimum_and_split_the_rest() -> None:
    assert LatencyConfig(min_iters=7, max_iters=7, rounds=5, time_budget_s=10).round_budget() == (2, 2, 2.0)
    assert LatencyConfig(min_iters=5, max_iters=50, rounds=5).round_budget() == (1, 10, 2.0)
    with pytest.raises(ValueError):
        LatencyConfig(rounds=0)
    with pytest.raises(ValueError):
        LatencyConfig(min_iters=10, max_iters=5)


def test_latency_stats_pool_rounds_and_report_their_spread() -> None:
    stats = LatencyStats.from_rounds([[0.10, 0.10, 0.10], [0.12, 0.12, 0.12]], (1, 3, 16, 16), scale=4)
    assert stats.iterations == 6 and stats.rounds == 2
    assert stats.min_ms == pytest.approx(100) and stats.max_ms == pytest.approx(120)
    assert stats.round_spread_pct == pytest.approx(100 * 20 / stats.p50_ms)
    assert stats.output_mpix_per_s == pytest.approx(64 * 64 / 1e6 / stats.mean_ms * 1e3)


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="CPU accounting reads Linux /proc")
def test_cpu_load_counts_unwatched_processes_as_other() -> None:
    start = time.perf_counter()
    load = CpuLoad()
    busy = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 1.5: pass"])
    busy.wait()
    elapsed = time.perf_counter() - start
    one_core_for_1_5_s = 100 * 1.5 / ((os.cpu_count() or 1) * elapsed)
    assert load.finish().other_pct >= 0.6 * one_core_for_1_5_s


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="CPU accounting reads Linux /proc")
def test_a_watched_process_that_dies_is_charged_up_to_its_last_sample() -> None:
    load = CpuLoad()
    busy = subprocess.Popen([sys.executable, "-c", "import time\nt = time.process_time()\nwhile time.process_time() - t < 1.0: pass"])
    load.watch(busy.pid)
    while busy.poll() is None:  # poll() reaps it: afterwards /proc no longer has the process
        load.sample()
        time.sleep(0.05)
    load.unwatch(busy.pid)
    assert load.watched_cpu_s >= 0.8  # not counted as another process's load
