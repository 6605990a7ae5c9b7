#!/usr/bin/env python
"""What ONNX Runtime (CPU) executes for an exported ELAN, node kind by node kind: where the range guard's time goes.

    python -m experiments.onnxruntime_profile [ONNX ...] [--shape 1x3x192x320] [--threads 2] [--rounds 5] [--iters 2]

Without files, exports the bundled model twice (`--no-guard`, then range-guarded) into a
temporary folder. Each model gets a session with the engine's own options
(`runtimes.onnxruntime_rt`: all graph optimisations, so the NCHWc convolutions with their fused
activations) plus ONNX Runtime's profiler, and all models run interleaved round after round on
one natural image (a slow spell of a shared machine lands on each alike). The profiler's
per-node kernel times are summed per run and kind, and the median over the timed runs is shown.

Kinds follow what the graph optimiser made of the export, read from the executed node's name
(ONNX Runtime names a fused node after the output of the last node it took in):
"Conv + Clip" is a convolution with the guard's Clip(0, 1) fused in (MLAS applies any fused
activation but ReLU as a second pass over each output block), "restore" a BatchNormalization
turned into an NCHWc depthwise convolution (the guard's per-channel restore), "Conv" every other
convolution (ReLU fused or none). The "Δ" column is the model's time minus the first model's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from collections import defaultdict
from functools import partial
from pathlib import Path

import numpy as np

from elan_deploy.bench.latency import latency_image, natural_input, time_interleaved
from elan_deploy.console import print_table
from elan_deploy.cpu import cpu_caps
from elan_deploy.results import machine_info
from elan_deploy.runtimes.base import parse_shape


def node_kind(op: str, name: str) -> str:
    """The row a profiled node counts in (see the module doc)."""
    if op == "Conv":
        if "BatchNormalization" in name:
            return "restore (BatchNormalization as depthwise Conv)"
        return "Conv + Clip" if "Clip" in name else "Conv"
    if op in ("Max", "Min"):
        return "Max / Min"
    return op


class ProfiledSession:
    """One ONNX Runtime session as the engine opens it, with the profiler on."""

    def __init__(self, path: Path, threads: int, prefix: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        options.enable_mem_pattern = False
        options.enable_profiling = True
        options.profile_file_prefix = str(prefix)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> None:
        self.session.run(None, {self.input: x})

    def per_run(self, skip: int) -> tuple[list[float], list[dict[str, float]], dict[str, int]]:
        """Stop profiling; (ms of each run, ms per kind of each run, nodes per kind of one run), first `skip` runs dropped."""
        events = json.loads(Path(self.session.end_profiling()).read_text())
        runs = [e for e in events if e.get("name") == "model_run"]
        bounds = [(e["ts"], e["ts"] + e["dur"]) for e in runs]
        kinds: list[dict[str, float]] = [defaultdict(float) for _ in runs]
        nodes: list[dict[str, int]] = [defaultdict(int) for _ in runs]
        for e in events:
            if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
                continue
            run = next((i for i, (start, end) in enumerate(bounds) if start <= e["ts"] <= end), None)
            if run is None:
                continue
            kind = node_kind(e["args"]["op_name"], e["name"].removesuffix("_kernel_time"))
            kinds[run][kind] += e["dur"] / 1000
            nodes[run][kind] += 1
        return [e["dur"] / 1000 for e in runs][skip:], kinds[skip:], dict(nodes[-1])


def export_bundled(folder: Path) -> list[Path]:
    """The bundled model exported unguarded and range-guarded into `folder`."""
    from elan_deploy.model import load_bundled
    from elan_deploy.runtimes import ModelSource

    loaded = load_bundled()
    paths = []
    for guarded in (False, True):
        source = ModelSource(loaded, work_dir=folder / ("guarded" if guarded else "unguarded"), guard=guarded)
        paths.append(source.onnx_path())
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", type=Path, help="ONNX files (default: the bundled model unguarded and guarded)")
    parser.add_argument("--shape", default="1x3x192x320")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iters", type=int, default=2)
    args = parser.parse_args()
    if missing := [str(m) for m in args.models if not m.is_file()]:
        parser.error(f"no ONNX file at {', '.join(missing)}; pass exported .onnx files, or none to export the bundled model")
    shape = parse_shape(args.shape)
    x = natural_input(shape, latency_image())
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        paths = args.models or export_bundled(folder)
        labels = [p.name if args.models else ("unguarded", "guarded")[i] for i, p in enumerate(paths)]
        sessions = {label: ProfiledSession(path, args.threads, folder / f"profile-{i}") for i, (label, path) in enumerate(zip(labels, paths))}
        time_interleaved({label: partial(s, x) for label, s in sessions.items()}, args.rounds, args.iters)
        results = {label: s.per_run(skip=1) for label, s in sessions.items()}  # the warm-up run is dropped
    kinds = sorted({k for _, per_kind, _ in results.values() for run in per_kind for k in run},
                   key=lambda k: -statistics.median(r.get(k, 0.0) for r in results[labels[-1]][1]))
    medians = {label: {k: statistics.median(run.get(k, 0.0) for run in per_kind) for k in kinds} for label, (_, per_kind, _) in results.items()}
    base = labels[0]
    rows = []
    for kind in kinds:
        row = [kind]
        for label in labels:
            nodes = results[label][2].get(kind, 0)
            delta = "" if label == base else f" ({medians[label][kind] - medians[base][kind]:+.1f})"
            row.append(f"{nodes} / {medians[label][kind]:.1f}{delta}")
        rows.append(row)
    totals = {label: statistics.median(sum(run.values()) for run in results[label][1]) for label in labels}
    rows.append(["**all nodes ms**", *(f"**{totals[label]:.1f}**" + ("" if label == base else f" ({totals[label] - totals[base]:+.1f}, {totals[label] / totals[base]:.3f}x)") for label in labels)])
    rows.append(["latency p50 (min) ms", *(f"{statistics.median(results[label][0]):.1f} ({min(results[label][0]):.1f})" for label in labels)])
    import onnxruntime as ort

    info = machine_info()
    print_table(
        f"ONNX Runtime {ort.__version__} node time at {args.shape}, {args.threads} threads, {args.rounds}x{args.iters} interleaved runs; "
        f"{info['cpu']} ({info.get('cpu_id')}), {cpu_caps().describe()}",
        ("node kind", *(f"{label}: nodes / median ms (Δ)" for label in labels)), rows,
    )


if __name__ == "__main__":
    main()
