"""Latency of one engine at one input shape, in the terms OpenVINO's benchmark_app uses.

Warm-up runs first (graph optimisation, allocator, lazy compilation), then a fixed number of
iterations or a time budget, whichever ends later, with at least `min_iters`. Peak memory is
sampled from /proc while the runs execute, so it includes the runtime's own arenas.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from elan_deploy.runtimes.base import Engine


@dataclass(frozen=True)
class LatencyConfig:
    warmup: int = 1
    min_iters: int = 3
    max_iters: int = 20
    time_budget_s: float = 10.0


@dataclass(frozen=True)
class LatencyStats:
    shape: str
    iterations: int
    min_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    images_per_s: float
    output_mpix_per_s: float
    peak_rss_mb: float

    def to_json(self) -> dict[str, float | int | str]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def rss_mb() -> float:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakMemory:
    """Samples the process RSS every few ms on a background thread."""

    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval_s = interval_s
        self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def natural_input(shape: tuple[int, int, int, int], image: np.ndarray) -> np.ndarray:
    """Tile a real photograph to the requested N,3,H,W (noise would overflow ELAN's attention)."""
    n, _, h, w = shape
    reps = (-(-h // image.shape[0]), -(-w // image.shape[1]), 1)
    tiled = np.tile(image, reps)[:h, :w].astype(np.float32)
    return np.ascontiguousarray(np.broadcast_to(tiled.transpose(2, 0, 1)[None], (n, 3, h, w)))


def measure_latency(engine: Engine, x: np.ndarray, scale: int, config: LatencyConfig = LatencyConfig()) -> LatencyStats:
    for _ in range(config.warmup):
        engine(x)
    times: list[float] = []
    with PeakMemory() as memory:
        start = time.perf_counter()
        while len(times) < config.max_iters and (
            len(times) < config.min_iters or time.perf_counter() - start < config.time_budget_s
        ):
            t0 = time.perf_counter()
            engine(x)
            times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1e3
    n, _, h, w = x.shape
    mean_s = float(ms.mean()) / 1e3
    return LatencyStats(
        shape="x".join(map(str, x.shape)),
        iterations=len(times),
        min_ms=float(ms.min()),
        p50_ms=float(np.percentile(ms, 50)),
        p90_ms=float(np.percentile(ms, 90)),
        p99_ms=float(np.percentile(ms, 99)),
        max_ms=float(ms.max()),
        mean_ms=float(ms.mean()),
        images_per_s=n / mean_s,
        output_mpix_per_s=n * h * w * scale * scale / 1e6 / mean_s,
        peak_rss_mb=memory.peak,
    )
