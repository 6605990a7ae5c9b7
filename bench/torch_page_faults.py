"""Why PyTorch eager latency drifts between runs: page faults from glibc's malloc, per inference.

    python bench/torch_page_faults.py [--precision bf16] [--shape 1x3x192x320] [--threads 1]

Eager PyTorch on the CPU allocates every large intermediate with malloc; glibc serves blocks
above its mmap threshold with fresh mmap()s and hands them back on free, so each inference
faults in (and the kernel zeroes) its working set again. How much that costs depends on the
host (in a VM every fault is also a nested-paging event), hence the drift. The script runs
the same engine in two child processes, once with glibc's defaults (`bench --allocator system`)
and once with malloc told to keep freed memory (`--allocator keep`, the bench's default, see
`elan_deploy.bench.allocator`), and prints latency and minor page faults per inference.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys


def measure(precision: str, shape: str, threads: int, iters: int, allocator: str) -> dict[str, list[float]]:
    import resource
    import time

    from elan_deploy.bench.allocator import apply_allocator
    from elan_deploy.bench.latency import natural_input
    from elan_deploy.bench.runner import latency_image
    from elan_deploy.commands.bench_cmd import parse_lr_shape
    from elan_deploy.model import load_bundled
    from elan_deploy.runtimes import BuildOptions, ModelSource, ShapeRange, open_engine

    apply_allocator(allocator)
    nchw = parse_lr_shape(shape)
    engine = open_engine(ModelSource(load_bundled()), "torch", precision, ShapeRange.static(nchw), BuildOptions(threads=threads))
    x = natural_input(nchw, latency_image())
    engine(x)
    ms, faults = [], []
    for _ in range(iters):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        engine(x)
        ms.append((time.perf_counter() - start) * 1e3)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return {"ms": ms, "faults": faults}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--shape", default="1x3x192x320")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--iters", type=int, default=4)
    parser.add_argument("--child", choices=("keep", "system"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.precision, args.shape, args.threads, args.iters, args.child)))
        return
    from elan_deploy.console import print_table

    rows = []
    for name, allocator in (("glibc defaults (system)", "system"), ("malloc keeps freed memory (keep)", "keep")):
        command = [sys.executable, __file__, "--child", allocator, "--precision", args.precision, "--shape", args.shape,
                   "--threads", str(args.threads), "--iters", str(args.iters)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append((name, " ".join(f"{v:.0f}" for v in result["ms"]), " ".join(str(v) for v in result["faults"])))
    print_table(
        f"PyTorch eager {args.precision}, {args.shape}, {args.threads} thread(s)",
        ("malloc", "latency per run (ms)", "minor page faults per run"), rows,
    )


if __name__ == "__main__":
    main()
