"""What the range guard's clamps cost in latency: guarded against unguarded engines, one run.

    python -m experiments.guard_cost [--cells onnxruntime:fp32,openvino:fp32] [--shape 1x3x192x320] [--rounds 7] [--iters 5] [--threads 2]

Builds each cell twice from the bundled model (range-guarded, and `--no-guard`), static at the
shape, and times both on one natural image in interleaved rounds (a slow spell of a shared
machine lands on both alike). Prints p50 and min per engine and the guarded/unguarded p50 ratio.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from functools import partial
from pathlib import Path

from elan_deploy.bench.latency import latency_image, natural_input, time_interleaved
from elan_deploy.console import print_table
from elan_deploy.cpu import cpu_caps
from elan_deploy.model import load_bundled
from elan_deploy.results import machine_info
from elan_deploy.runtimes import EngineLoader, ModelSource, ShapeRange
from elan_deploy.runtimes.base import parse_shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="onnxruntime:fp32,openvino:fp32")
    parser.add_argument("--shape", default="1x3x192x320")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    shape = parse_shape(args.shape)
    x = natural_input(shape, latency_image())
    loaded = load_bundled()
    engines = {}
    with tempfile.TemporaryDirectory() as scratch:
        for cell in args.cells.split(","):
            runtime, precision = cell.split(":")
            for guarded in (False, True):
                source = ModelSource(loaded, work_dir=Path(scratch) / "onnx", guard=guarded)
                engine = EngineLoader(source, runtime, precision, ShapeRange.static(shape), threads=args.threads, cache_root=Path(scratch) / "engines").open()
                engines[(cell, "guarded" if guarded else "unguarded")] = engine
        times = time_interleaved({key: partial(engine, x) for key, engine in engines.items()}, args.rounds, args.iters)
    p50 = {key: statistics.median(values) * 1000 for key, values in times.items()}
    rows = []
    for (cell, guard), value in p50.items():
        ratio = value / p50[(cell, "unguarded")]
        rows.append((cell, guard, engines[(cell, guard)].info.precision_used, f"{value:.1f}", f"{min(times[(cell, guard)]) * 1000:.1f}", f"{ratio:.3f}"))
    info = machine_info()
    print_table(
        f"range guard cost at {args.shape}, {args.threads} threads, {args.rounds}x{args.iters} interleaved runs; "
        f"{info['cpu']} ({info.get('cpu_id')}), {cpu_caps().describe()}",
        ("cell", "model", "ran", "p50 ms", "min ms", "p50 / unguarded"), rows,
    )


if __name__ == "__main__":
    main()
