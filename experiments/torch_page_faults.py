"""Why PyTorch eager latency drifts between runs: page faults from glibc's malloc, per inference.

    python -m experiments.torch_page_faults [--precision bf16] [--shape 1x3x192x320] [--threads 1]

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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository: the child runs as `python -m experiments.torch_page_faults` from it


def measure(precision: str, shape: str, threads: int, iters: int, allocator: str) -> dict[str, list[float]]:
    import resource

    from elan_deploy.bench.allocator import apply_allocator
    from elan_deploy.bench.latency import latency_image, natural_input, time_interleaved
    from elan_deploy.model import load_bundled
    from elan_deploy.runtimes import EngineLoader, ModelSource, ShapeRange
    from elan_deploy.runtimes.base import parse_shape

    apply_allocator(allocator)
    nchw = parse_shape(shape)
    engine = EngineLoader(ModelSource(load_bundled()), "torch", precision, ShapeRange.static(nchw), threads=threads).open()
    x = natural_input(nchw, latency_image())
    faults: list[int] = []

    def counted() -> None:  # timed with the run: two getrusage calls, about a microsecond against milliseconds of inference
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        engine(x)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

    engine(x)
    seconds = time_interleaved({"run": counted}, iters, warmup=0)["run"]
    return {"ms": [t * 1e3 for t in seconds], "faults": faults}


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
        command = [sys.executable, "-m", "experiments.torch_page_faults", "--child", allocator, "--precision", args.precision, "--shape", args.shape,
                   "--threads", str(args.threads), "--iters", str(args.iters)]
        done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append((name, " ".join(f"{v:.0f}" for v in result["ms"]), " ".join(str(v) for v in result["faults"])))
    print_table(
        f"PyTorch eager {args.precision}, {args.shape}, {args.threads} thread(s)",
        ("malloc", "latency per run (ms)", "minor page faults per run"), rows,
    )


if __name__ == "__main__":
    main()
