"""How steady this machine's speed is: per-second latency of one engine at 1 and at N threads.

    python -m experiments.host_stability [--runtime openvino] [--precision bf16] [--shape 1x3x64x64]
                                         [--seconds 60] [--threads 1,2]

For each thread count, an engine runs back to back for `--seconds`; the median of every
one-second window is printed with the run's min, p50 and the ratio of the slowest to the
fastest window. Two probes say what moved on the host meanwhile:

- after every multi-threaded second, a cache-line round trip between a process pinned to the
  first core and one pinned to the second (Python, so its floor is interpreter overhead: a few
  hundred ns when the two vCPUs share a cache, about twice that when the host has placed them
  apart). Multi-threaded inference synchronises its threads hundreds of times per run; the
  correlation of the two series is printed, so whether placement explains its drift is
  measured, not assumed;
- a compute-only probe (two single-threaded processes, one per core) shows whether raw per-core
  speed moved, e.g. because another guest shares the physical cores.
"""

from __future__ import annotations

import argparse
import mmap
import multiprocessing as mp
import os
import time
from collections.abc import Callable
from functools import partial

import numpy as np

from elan_deploy.bench.latency import latency_image, natural_input, time_windows
from elan_deploy.console import print_table
from elan_deploy.model import load_bundled
from elan_deploy.runtimes import EngineLoader, ModelSource, ShapeRange
from elan_deploy.runtimes.base import parse_shape


def windows(run: Callable[[], object], seconds: float, after_each: Callable[[], object] | None = None) -> list[float]:
    """Median latency (ms) of each one-second window; `after_each` runs between windows, untimed."""
    return [median * 1e3 for median in time_windows(run, seconds, after_each=after_each)]


def _pong(conn, shared: mmap.mmap, core: int) -> None:
    """Answer every value the other core writes with the next one; sleeps between bursts."""
    os.sched_setaffinity(0, {core})
    while (count := conn.recv()) > 0:
        value = 1
        for _ in range(count):
            while shared[0] != value % 256:
                pass
            shared[0] = (value + 1) % 256
            value += 2
        conn.send(True)


class CrossCoreProbe:
    """Cache-line round trip between the first two cores, in short bursts (Linux)."""

    def __init__(self, round_trips: int = 20000) -> None:
        cores = sorted(os.sched_getaffinity(0))
        self.cores, self.round_trips = cores[:2], round_trips
        self.samples_ns: list[float] = []
        self._shared = mmap.mmap(-1, mmap.PAGESIZE)
        context = mp.get_context("fork")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_pong, args=(child, self._shared, self.cores[1]), daemon=True)
        self._process.start()

    def sample(self) -> None:
        allowed = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {self.cores[0]})  # this thread only; the engine's threads keep theirs
        try:
            self._shared[0] = 0
            self._conn.send(self.round_trips)
            value = 0
            start = time.perf_counter()
            for _ in range(self.round_trips):
                self._shared[0] = (value + 1) % 256
                while self._shared[0] != (value + 2) % 256:
                    pass
                value += 2
            self.samples_ns.append((time.perf_counter() - start) / self.round_trips * 1e9)
            self._conn.recv()
        finally:
            os.sched_setaffinity(0, allowed)

    def close(self) -> None:
        self._conn.send(0)
        self._process.join(timeout=5)


def _core_probe(core: int, seconds: float, queue) -> None:
    if hasattr(os, "sched_setaffinity"):  # Linux; elsewhere the OS spreads the processes itself
        os.sched_setaffinity(0, {core})
    a = np.random.default_rng(0).random((128, 128), dtype=np.float32)
    queue.put((core, windows(lambda: [a @ a for _ in range(100)], seconds)))


def core_probe(seconds: float) -> dict[int, list[float]]:
    """Independent compute on every core at once (BLAS single-threaded)."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    context = mp.get_context("spawn")
    queue = context.Queue()
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    procs = [context.Process(target=_core_probe, args=(core, seconds, queue)) for core in cores]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=seconds + 120) for _ in procs)
    for p in procs:
        p.join()
    return results


def summary(name: str, medians: list[float]) -> tuple[str, ...]:
    a = np.array(medians)
    return (name, f"{a.min():.1f}", f"{np.median(a):.1f}", f"{a.max() / a.min():.2f}", " ".join(f"{m:.3g}" for m in medians))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", default="openvino")
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--shape", default="1x3x64x64")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--threads", default="1,2")
    args = parser.parse_args()
    shape = parse_shape(args.shape)
    source = ModelSource(load_bundled())
    x = natural_input(shape, latency_image())
    rows = []
    probe = CrossCoreProbe() if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 1 else None
    correlation = None
    for threads in (int(t) for t in args.threads.split(",")):
        engine = EngineLoader(source, args.runtime, args.precision, ShapeRange.static(shape), threads=threads).open()
        engine(x)
        watch = probe is not None and threads > 1 and not probe.samples_ns
        medians = windows(partial(engine, x), args.seconds, probe.sample if watch else None)
        rows.append(summary(f"{args.runtime} {args.precision}, {threads} thread(s)", medians))
        if watch:
            rows.append(summary(f"cross-core round trip after each second (ns), cores {probe.cores}", probe.samples_ns))
            correlation = float(np.corrcoef(medians, probe.samples_ns)[0, 1])
        del engine
    if probe is not None:
        probe.close()
    for core, medians in sorted(core_probe(args.seconds).items()):
        rows.append(summary(f"128² matmul ×100 on core {core} (all cores busy)", medians))
    print_table(
        f"per-second medians over {args.seconds:.0f} s at {args.shape}",
        ("what", "fastest s", "median s", "slowest/fastest", "every second"), rows,
    )
    if correlation is not None:
        print(f"correlation of multi-threaded latency with the cross-core round trip, second by second: r = {correlation:.2f}")


if __name__ == "__main__":
    main()
