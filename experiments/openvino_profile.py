#!/usr/bin/env python
"""What OpenVINO (CPU) actually executes for an exported ELAN: nodes and time per op type.

    python -m experiments.openvino_profile [ONNX ...] [--shape 1x3x192x320] [--precision f32,bf16] [--threads 2]
    python -m experiments.openvino_profile --export depthwise/shared/reshape --export depthwise/shared/gather
    python -m experiments.openvino_profile --export depthwise/sdpa/gather@23 --nodes 20
    python -m experiments.openvino_profile MODEL.xml --config default --config CPU_DENORMALS_OPTIMIZATION=YES

Each model (an ONNX file, or an export of the bundled model named shift/attention/windows) is
reshaped to the static shape, compiled with PERF_COUNT on, run `--warmup` + `--iters` times on
one natural image, and read back through `compiled_model.get_runtime_model()`: every executed
node carries its `layerType` and `execTimeMcs` in rt_info. The table counts nodes per layer type
as listed and (in brackets) as executed — OpenVINO lists in-place Reshapes, Splits, Concats and
Reorders that never run — sums their time (median over the timed runs), and totals the
data-movement types (Reshape, Transpose, Split, Concatenation, Reorder, Gather); the executed
count is the one the export rewrites are judged on (`elan_deploy.runtimes.openvino_graph`).
The "compute share" row is the part of all node time spent in 1x1/3x3 convolutions, MatMuls and
Softmax (the depthwise one-hot shift convolutions, listed apart, do not count: they only move
data). p50 × share is the latency the model would have if every other node (data movement,
shifts, quantizers, Eltwise) took no time and these kernels ran as fast as measured: the floor
for any graph rewrite on this runtime and CPU.
`--config` compiles each model once per set of extra OpenVINO properties (KEY=VALUE pairs,
comma-separated; "default" adds none), as benchmark_app's `-load_config` would, so a property is
judged in the same interleaved run as the baseline. `--nodes N` lists the N costliest node kinds
(layer type, output shape, kernel, output precision): whether a Gather runs a JIT kernel or the
reference loop, or which MatMuls run INT8 and which bf16.
Runs of all models, precisions and configs are interleaved round-robin so a slow spell of a shared
machine lands on each alike; latency p50/min come from the same runs (PERF_COUNT
adds little per node; use the bench for headline latency).
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import statistics
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from elan_deploy.bench.latency import time_interleaved
from elan_deploy.runtimes.openvino_graph import DATA_MOVEMENT, NodeKind, data_movement, layer_counts, node_times

ROOT = Path(__file__).resolve().parents[1]  # the repository; its sibling ../shared/data holds the datasets


@dataclass
class Profile:
    """Nodes of one compiled model: listed and executed counts and per-run time (µs) per layer type."""

    counts: Counter = field(default_factory=Counter)
    executed: Counter = field(default_factory=Counter)
    times_us: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    shift_us: list[float] = field(default_factory=list)  # depthwise (shift) convolutions per run
    compute_share: list[float] = field(default_factory=list)  # per run, shifts not counted as compute
    # fused Subgraphs (e.g. INT8 quantizers) per name with block numbers dropped: (count, per-run µs)
    subgraphs: dict[str, list[tuple[int, float]]] = field(default_factory=lambda: defaultdict(list))
    kinds_us: dict[NodeKind, list[float]] = field(default_factory=lambda: defaultdict(list))  # per run
    kind_nodes: Counter = field(default_factory=Counter)


def subgraph_kind(name: str) -> str:
    """A fused Subgraph's friendly name without block and op numbers: one row per kind of quantizer."""
    name = re.sub(r"body\.\d+", "body.N", name)
    return re.sub(r"(_\d+)+$", "", re.sub(r"([A-Za-z])_\d+(?=/)", r"\1", name))


def _sample_times(compiled, profile: Profile) -> None:
    times = node_times(compiled)
    for layer, us in times.per_type_us.items():
        profile.times_us[layer].append(us)
    profile.shift_us.append(times.shift_us)
    profile.compute_share.append(times.compute_share())
    per_subgraph: dict[str, list[float]] = defaultdict(list)
    for name, us in times.subgraphs:
        per_subgraph[subgraph_kind(name)].append(us)
    for kind, kind_us in per_subgraph.items():
        profile.subgraphs[kind].append((len(kind_us), sum(kind_us)))
    for node_kind, us in times.per_kind_us.items():
        profile.kinds_us[node_kind].append(us)
    profile.kind_nodes = times.per_kind_nodes


def natural_image(shape: tuple[int, ...]) -> np.ndarray:
    from PIL import Image

    n, _, h, w = shape
    source = ROOT.parent / "shared" / "data" / "T91" / "t46.png"
    if not source.is_file():
        from elan_deploy.export.verify import probe_image

        return probe_image(n, h, w)
    img = np.asarray(Image.open(source).convert("RGB"), dtype=np.float32).transpose(2, 0, 1)
    reps = (1, -(-h // img.shape[1]), -(-w // img.shape[2]))
    tiled = np.tile(img, reps)[:, :h, :w]
    return np.ascontiguousarray(np.stack([tiled] * n))


def export_config(spec: str):  # noqa: ANN201  (an ExportConfig; elan_deploy.export imports torch)
    """`shift/attention/windows[@opset]` -> its ExportConfig; ValueError names what is wrong."""
    from elan_deploy.errors import ElanDeployError
    from elan_deploy.export import DEFAULT_OPSET, ExportConfig

    strategies, at, opset = spec.partition("@")
    if at and not opset.isdigit():
        raise ValueError(f"--export takes shift/attention/windows[@opset], e.g. depthwise/sdpa/gather@23; got '{spec}'")
    parts = strategies.split("/")
    shift, attention, windows = (parts + ["depthwise", "shared", "gather"][len(parts):])[:3]
    try:
        return ExportConfig(shift=shift, attention=attention, windows=windows, opset=int(opset) if opset else DEFAULT_OPSET)
    except ElanDeployError as exc:
        raise ValueError(f"--export {spec}: {exc}") from None


def export_named(spec: str, folder: Path) -> Path:
    """Export the bundled model as `spec` (see `export_config`) into `folder`."""
    from elan_deploy.export import export_onnx
    from elan_deploy.model import load_bundled

    path = folder / (spec.replace("/", "-").replace("@", "-opset") + ".onnx")
    export_onnx(load_bundled(), path, export_config(spec))
    return path


def parse_config(spec: str) -> dict[str, str]:
    """`KEY=VALUE[,KEY=VALUE]` (or "default") -> extra OpenVINO compile properties."""
    if spec == "default":
        return {}
    pairs = [item.partition("=") for item in spec.split(",") if item]
    if not pairs or any(not key or not sep or not value for key, sep, value in pairs):
        raise ValueError(f"--config takes KEY=VALUE pairs separated by commas, or 'default'; got '{spec}'")
    return {key: value for key, _, value in pairs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("onnx", nargs="*", type=Path, help="exported ONNX files or OpenVINO IRs (.xml)")
    parser.add_argument("--export", action="append", default=[], help="export the bundled model: shift/attention/windows, e.g. depthwise/shared/reshape")
    parser.add_argument("--shape", default="1x3x192x320")
    parser.add_argument("--precision", default="f32,bf16", help="OpenVINO inference precisions, comma-separated [f32,bf16]")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--subgraphs", action="store_true", help="also list fused Subgraphs (INT8 quantizers) by name")
    parser.add_argument("--config", action="append", default=[],
                        help="extra OpenVINO properties, KEY=VALUE[,KEY=VALUE] or 'default'; repeat to compare sets in one run")
    parser.add_argument("--nodes", type=int, default=0, metavar="N", help="also list the N costliest node kinds (type, shape, kernel, precision)")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.onnx if not p.is_file()]
    if missing:
        parser.error(f"no such model file: {', '.join(missing)}")
    if not args.onnx and not args.export:
        parser.error("name a model file or an --export")
    if args.nodes < 0:
        parser.error(f"--nodes takes a count of 0 or more; got {args.nodes}")
    if args.json and any(args.json.resolve() == p.resolve() for p in args.onnx):
        parser.error(f"--json {args.json} is one of the models to profile; name a new file for the results")
    try:
        configs = [(spec, parse_config(spec)) for spec in (args.config or ["default"])]
        for spec in args.export:
            export_config(spec)
    except ValueError as exc:
        parser.error(str(exc))

    import openvino as ov

    from elan_deploy.export import parse_shape
    from elan_deploy.scratch import temporary_dir

    shape = tuple(parse_shape(args.shape))
    x = natural_image(shape)
    core = ov.Core()
    cells = []
    with temporary_dir("elan-ov-profile") as folder:  # exports live only until compiled
        models = [(str(p), p) for p in args.onnx] + [(spec, export_named(spec, folder)) for spec in args.export]
        for (model_name, path), precision, (config_name, extra) in itertools.product(models, args.precision.split(","), configs):
            name = model_name if len(configs) == 1 else f"{model_name} [{config_name}]"
            model = core.read_model(str(path))
            model.reshape({model.input(0): ov.PartialShape(list(shape))})
            config = {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": args.threads,
                      "PERFORMANCE_HINT": "LATENCY", "PERF_COUNT": True, **extra}
            compiled = core.compile_model(model, "CPU", config)
            request = compiled.create_infer_request()
            used = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
            profile = Profile(counts=layer_counts(compiled))
            request.infer({0: x})  # one run marks the nodes that do not execute
            profile.executed = layer_counts(compiled, executed_only=True)
            applied = {key: str(compiled.get_property(key)) for key in extra}  # as the plugin reads them back
            cells.append({"name": name, "config": config_name, "applied": applied, "precision": used, "compiled": compiled, "request": request, "profile": profile, "ms": []})
            print(f"compiled {name} {used}: {data_movement(profile.counts)} data-movement nodes listed, "
                  f"{data_movement(profile.executed)} executed", file=sys.stderr)

    def sample(i: int) -> None:  # the per-node counters of the run just timed, before the next overwrites them
        _sample_times(cells[i]["compiled"], cells[i]["profile"])

    calls = {i: partial(cell["request"].infer, {0: x}) for i, cell in enumerate(cells)}
    for i, seconds in time_interleaved(calls, args.iters, warmup=args.warmup, after_run=sample).items():
        cells[i]["ms"] = [t * 1e3 for t in seconds]

    types = sorted({t for c in cells for t in c["profile"].counts}, key=lambda t: (t not in DATA_MOVEMENT, t))
    header = "| layer type | " + " | ".join(f"{c['name']} {c['precision']}: listed (executed) / ms" for c in cells) + " |"
    print(header)
    print("|---|" + "---|" * len(cells))
    for t in types:
        row = []
        for c in cells:
            n, ran = c["profile"].counts.get(t, 0), c["profile"].executed.get(t, 0)
            times = c["profile"].times_us.get(t)
            row.append(f"{n} ({ran}) / {statistics.median(times) / 1e3:.1f}" if times else f"{n} ({ran}) / -")
        print(f"| {t} | " + " | ".join(row) + " |")
    dm = []
    for c in cells:
        ms = sum(statistics.median(c["profile"].times_us[t]) for t in DATA_MOVEMENT if c["profile"].times_us.get(t)) / 1e3
        dm.append(f"**{data_movement(c['profile'].counts)} ({data_movement(c['profile'].executed)}) / {ms:.1f}**")
    print("| **data movement** | " + " | ".join(dm) + " |")
    print("| **all nodes ms** | " + " | ".join(f"**{sum(statistics.median(v) for v in c['profile'].times_us.values()) / 1e3:.1f}**" for c in cells) + " |")
    print("| of Convolution: depthwise shifts ms | " + " | ".join(f"{statistics.median(c['profile'].shift_us) / 1e3:.1f}" for c in cells) + " |")
    floor = []
    for c in cells:
        share = statistics.median(c["profile"].compute_share)
        floor.append(f"**{100 * share:.1f} % / {share * statistics.median(c['ms']):.1f}**")
    print("| **compute share / p50 × share ms** | " + " | ".join(floor) + " |")
    print("| latency p50 (min) ms | " + " | ".join(f"{statistics.median(c['ms']):.1f} ({min(c['ms']):.1f})" for c in cells) + " |")
    if args.subgraphs:
        _print_subgraphs(cells)
    if args.nodes:
        _print_node_kinds(cells, args.nodes)
    load = os.getloadavg()
    print(f"shape {args.shape}, {args.threads} threads, {args.iters} timed runs after {args.warmup}, OpenVINO {ov.get_version()}, "
          f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}, cpu: {core.get_property('CPU', 'FULL_DEVICE_NAME')}")
    if args.json:
        from elan_deploy.fileio import write_json_atomic

        write_json_atomic(args.json, {
            "shape": list(shape), "threads": args.threads, "openvino": ov.get_version(), "loadavg": list(load),
            "cells": [{"name": c["name"], "config": c["config"], "applied": c["applied"], "precision": c["precision"], "ms": c["ms"],
                       "counts": dict(c["profile"].counts), "executed": dict(c["profile"].executed),
                       "median_us": {t: statistics.median(v) for t, v in c["profile"].times_us.items()},
                       "kinds": [{**kind._asdict(), "nodes": c["profile"].kind_nodes[kind], "median_us": statistics.median(us)}
                                 for kind, us in c["profile"].kinds_us.items()],
                       "shift_us": c["profile"].shift_us, "compute_share": c["profile"].compute_share} for c in cells],
        })
    return 0


def _print_subgraphs(cells: list[dict]) -> None:
    """Fused Subgraphs per kind (name without block numbers): count / median ms per run."""
    kinds = sorted({k for c in cells for k in c["profile"].subgraphs})
    print("\n| fused Subgraph | " + " | ".join(f"{c['name']} {c['precision']}: n / ms" for c in cells) + " |")
    print("|---|" + "---|" * len(cells))
    for kind in kinds:
        row = []
        for c in cells:
            runs = c["profile"].subgraphs.get(kind)
            row.append(f"{runs[0][0]} / {statistics.median(t for _, t in runs) / 1e3:.1f}" if runs else "–")
        print(f"| {kind} | " + " | ".join(row) + " |")


def _print_node_kinds(cells: list[dict], top: int) -> None:
    """Per model: its `top` costliest node kinds, median ms per run, and how many nodes each has."""
    for c in cells:
        kinds = c["profile"].kinds_us
        ranked = sorted(kinds, key=lambda k: -statistics.median(kinds[k]))[:top]
        print(f"\n| {c['name']} {c['precision']}: layer | output shape | kernel | output precision | nodes | ms |")
        print("|---|---|---|---|---|---|")
        for kind in ranked:
            print(f"| {kind.layer} | {kind.shape} | {kind.primitive} | {kind.precision} | {c['profile'].kind_nodes[kind]} | "
                  f"{statistics.median(kinds[kind]) / 1e3:.1f} |")


if __name__ == "__main__":
    sys.exit(main())
