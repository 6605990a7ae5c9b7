"""Latency statistics in the terms OpenVINO's benchmark_app uses, and what disturbs them.

Samples come from several interleaved rounds (see `bench.worker`): p50 over all of them, the
minimum as the machine's best case, and the spread of the per-round medians as the run's own
measure of how steady the machine was. `CpuLoad` records how much CPU other processes and the
hypervisor (steal) took during the timing, so a noisy number says why it is noisy.
`time_interleaved` and `time_windows` time callables in this process the same way, for the
measurement scripts that compare engines without the worker processes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from elan_deploy.errors import ElanDeployError
from elan_deploy.imaging import list_images, read_image


@dataclass(frozen=True)
class LatencyConfig:
    """Per engine and shape: `rounds` interleaved rounds share the iteration and time budgets.

    The first round runs until its share of `time_budget_s` (within its share of the iteration
    limits); every later round then runs exactly as many iterations, so each round weighs the
    same in the pooled percentiles whether the machine was in a fast or a slow spell.
    """

    warmup: int = 1
    min_iters: int = 5
    max_iters: int = 50
    time_budget_s: float = 10.0
    rounds: int = 5
    settle_s: float = 0.25  # pause before each engine's turn so the previous one's threads go idle
    rewarm_below_s: float = 0.5  # engines faster than this re-warm once per round (caches, thread wake-up)

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.min_iters < 1 or self.max_iters < self.min_iters or self.warmup < 0:
            raise ValueError("LatencyConfig needs rounds >= 1, 1 <= min_iters <= max_iters and warmup >= 0")

    def round_budget(self) -> tuple[int, int, float]:
        """(min iterations, max iterations, seconds) for the first round; min wins over max."""
        least = -(-self.min_iters // self.rounds)
        return least, max(least, self.max_iters // self.rounds), self.time_budget_s / self.rounds


@dataclass(frozen=True)
class LatencyStats:
    shape: str
    iterations: int
    rounds: int
    min_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    round_spread_pct: float  # (slowest - fastest round median) / p50
    images_per_s: float
    output_mpix_per_s: float

    @classmethod
    def from_rounds(cls, rounds: list[list[float]], shape: tuple[int, int, int, int], scale: int) -> LatencyStats:
        """Pooled statistics of per-round times in seconds; `shape` is the useful (unpadded) input."""
        ms = np.array([t for r in rounds for t in r]) * 1e3
        if ms.size == 0:
            raise ValueError("no timed runs")
        medians = [float(np.median(r)) * 1e3 for r in rounds if r]
        p50 = float(np.percentile(ms, 50))
        n, _, h, w = shape
        mean_s = float(ms.mean()) / 1e3
        return cls(
            shape="x".join(map(str, shape)), iterations=len(ms), rounds=len(medians),
            min_ms=float(ms.min()), p50_ms=p50, p90_ms=float(np.percentile(ms, 90)), p99_ms=float(np.percentile(ms, 99)),
            max_ms=float(ms.max()), mean_ms=float(ms.mean()), round_spread_pct=100 * (max(medians) - min(medians)) / p50,
            images_per_s=n / mean_s, output_mpix_per_s=n * h * w * scale * scale / 1e6 / mean_s,
        )

    def to_json(self) -> dict[str, float | int | str]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


K = TypeVar("K", bound=Hashable)


def time_interleaved(
    calls: Mapping[K, Callable[[], object]],
    rounds: int,
    runs_per_round: int = 1,
    warmup: int = 1,
    settle_s: float = 0.0,
    after_run: Callable[[K], object] | None = None,
) -> dict[K, list[float]]:
    """Seconds per run of each callable, timed in turn round after round, in this process.

    The in-process form of the harness's interleaved rounds (`bench.runner` does the same across
    worker processes): a slow spell of a shared or drifting machine then lands on every callable
    alike, instead of on whichever happened to be timed during it, so their ratios stay fair.
    First `warmup` untimed rounds run each callable once, in the mapping's order; then each of
    `rounds` rounds gives every callable, in that order, `runs_per_round` back-to-back timed runs,
    after sleeping `settle_s` so the previous callable's worker threads go idle. `after_run(key)`
    runs untimed after every timed run, to read what that run left behind (OpenVINO's per-node
    profile counters, say) before the next run overwrites it. Each key's times are in run order:
    round r is `times[key][r * runs_per_round:(r + 1) * runs_per_round]`.
    """
    if rounds < 0 or runs_per_round < 1 or warmup < 0 or settle_s < 0:
        raise ValueError("time_interleaved needs rounds >= 0, runs_per_round >= 1, warmup >= 0 and settle_s >= 0")
    for _ in range(warmup):
        for call in calls.values():
            call()
    times: dict[K, list[float]] = {key: [] for key in calls}
    for _ in range(rounds):
        for key, call in calls.items():
            if settle_s:
                time.sleep(settle_s)
            for _ in range(runs_per_round):
                start = time.perf_counter()
                call()
                times[key].append(time.perf_counter() - start)
                if after_run is not None:
                    after_run(key)
    return times


def time_windows(
    call: Callable[[], object], seconds: float, window_s: float = 1.0, after_each: Callable[[], object] | None = None
) -> list[float]:
    """Median seconds per run of `call` in each `window_s` window of back-to-back runs, for `seconds`.

    Where `time_interleaved` evens drift out, this shows it: a steady machine gives a flat series,
    a shared one steps when a neighbour starts or the host moves our vCPUs. A window ends after the
    run that crosses `window_s`, so a run longer than the window gives a window of one run.
    `after_each` runs between windows, untimed but inside the `seconds`.
    """
    medians = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        times, window = [], time.perf_counter()
        while time.perf_counter() - window < window_s:
            t = time.perf_counter()
            call()
            times.append(time.perf_counter() - t)
        medians.append(float(np.median(times)))
        if after_each is not None:
            after_each()
    return medians


def _ru_maxrss_mb() -> float:
    """Peak RSS from getrusage: KiB on Linux, bytes on macOS."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def rss_mb() -> float:
    """Current RSS (Linux); elsewhere the peak so far, the closest figure without extra packages."""
    value = _status_mb("VmRSS")
    return _ru_maxrss_mb() if value is None else value


def reset_peak_rss() -> None:
    """Start the peak-RSS high-water mark afresh (Linux: `5` to clear_refs); a no-op elsewhere."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    """Peak resident memory of this process since `reset_peak_rss` (the kernel's high-water mark)."""
    value = _status_mb("VmHWM")
    return _ru_maxrss_mb() if value is None else value


def _system_jiffies() -> tuple[int, int, int] | None:
    """(busy, steal, total) CPU jiffies of the whole machine, from /proc/stat."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return user + nice + system + irq + softirq, steal, user + nice + system + idle + iowait + irq + softirq + steal


def _process_jiffies(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, ValueError, IndexError):
        return None


class CpuLoad:
    """CPU share taken by other processes and by the hypervisor while our workers were timed.

    `other_pct` is busy time of the machine not spent by the watched processes, as a percentage of
    all cores over the interval; `steal_pct` is time the hypervisor gave to other guests.
    Both are None off Linux.
    """

    def __init__(self) -> None:
        self._start = _system_jiffies()
        self._own_start: dict[int, int] = {}
        self._own_seen: dict[int, int] = {}
        self._own_total = 0
        self.other_pct: float | None = None
        self.steal_pct: float | None = None
        self.loadavg_1m: float | None = None

    def watch(self, pid: int) -> None:
        if (jiffies := _process_jiffies(pid)) is not None:
            self._own_start.setdefault(pid, jiffies)
            self._own_seen[pid] = jiffies

    def sample(self) -> None:
        """Note the watched processes' CPU so far, so one that dies later is charged to us up to here."""
        for pid in self._own_start:
            if (jiffies := _process_jiffies(pid)) is not None:
                self._own_seen[pid] = jiffies

    def unwatch(self, pid: int) -> None:
        """Stop watching; a process that has vanished counts up to its last `sample`."""
        start = self._own_start.pop(pid, None)
        seen = self._own_seen.pop(pid, None)
        end = _process_jiffies(pid)
        end = seen if end is None else end
        if start is not None and end is not None:
            self._own_total += end - start

    @property
    def watched_cpu_s(self) -> float:
        """CPU seconds charged to the watched processes that have been unwatched so far."""
        return self._own_total / os.sysconf("SC_CLK_TCK")

    def finish(self) -> CpuLoad:
        for pid in list(self._own_start):
            self.unwatch(pid)
        if hasattr(os, "getloadavg"):
            self.loadavg_1m = round(os.getloadavg()[0], 2)
        end = _system_jiffies()
        if self._start is None or end is None or end[2] <= self._start[2]:
            return self
        busy, steal, total = (b - a for a, b in zip(self._start, end))
        self.other_pct = round(max(0.0, 100 * (busy - self._own_total) / total), 1)
        self.steal_pct = round(100 * steal / total, 1)
        return self


def natural_input(shape: tuple[int, int, int, int], image: np.ndarray) -> np.ndarray:
    """Tile a real photograph to the requested N,3,H,W (noise would overflow ELAN's attention)."""
    n, _, h, w = shape
    reps = (-(-h // image.shape[0]), -(-w // image.shape[1]), 1)
    tiled = np.tile(image, reps)[:h, :w].astype(np.float32)
    return np.ascontiguousarray(np.broadcast_to(tiled.transpose(2, 0, 1)[None], (n, 3, h, w)))


SAMPLES_DIR = Path(__file__).resolve().parents[1] / "calibration" / "samples"


def latency_image() -> np.ndarray:
    """A bundled T91 photograph (training data, never a test image) tiled into latency inputs."""
    images = list_images(SAMPLES_DIR) if SAMPLES_DIR.is_dir() else []
    if not images:
        raise ElanDeployError(f"bundled sample images missing from {SAMPLES_DIR}; reinstall elan-deploy")
    return read_image(max(images, key=lambda p: p.stat().st_size))
