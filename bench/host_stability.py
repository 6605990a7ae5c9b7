"""How steady this machine's speed is: per-second latency of one engine at 1 and at N threads.

    python bench/host_stability.py [--runtime openvino] [--precision bf16] [--shape 1x3x64x64]
                                   [--seconds 60] [--threads 1,2]

For each thread count, an engine runs back to back for `--seconds`; the median of every
one-second window is printed with the run's min, p50 and the ratio of the slowest to the
fastest window. Next to it, a compute-only probe (two single-threaded processes, one per
core) shows whether raw per-core speed moved at the same time. On shared VMs the host may move
the vCPUs between placements that share a cache or not: multi-threaded inference, which
synchronises its threads hundreds of times per run, then switches between two speeds while
single-threaded inference and independent per-core work stay put.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time

import numpy as np

from elan_deploy.bench.latency import natural_input
from elan_deploy.bench.runner import latency_image
from elan_deploy.commands.bench_cmd import parse_lr_shape
from elan_deploy.console import print_table
from elan_deploy.model import load_bundled
from elan_deploy.runtimes import BuildOptions, EngineCache, ModelSource, ShapeRange, open_engine


def windows(run, seconds: float) -> list[float]:
    """Median latency (ms) of each one-second window."""
    medians = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        times, window = [], time.perf_counter()
        while time.perf_counter() - window < 1.0:
            t = time.perf_counter()
            run()
            times.append(time.perf_counter() - t)
        medians.append(float(np.median(times)) * 1e3)
    return medians


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
    shape = parse_lr_shape(args.shape)
    source = ModelSource(load_bundled())
    x = natural_input(shape, latency_image())
    rows = []
    for threads in (int(t) for t in args.threads.split(",")):
        engine = open_engine(source, args.runtime, args.precision, ShapeRange.static(shape), BuildOptions(threads=threads), EngineCache())
        engine(x)
        rows.append(summary(f"{args.runtime} {args.precision}, {threads} thread(s)", windows(lambda: engine(x), args.seconds)))
        del engine
    for core, medians in sorted(core_probe(args.seconds).items()):
        rows.append(summary(f"128² matmul ×100 on core {core} (all cores busy)", medians))
    print_table(
        f"per-second medians over {args.seconds:.0f} s at {args.shape}",
        ("what", "fastest s ms", "median s ms", "slowest/fastest", "every second (ms)"), rows,
    )


if __name__ == "__main__":
    main()
