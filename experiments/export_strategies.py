#!/usr/bin/env python
"""Latency of every export strategy (shift × attention × windows × opset) in ONNX Runtime and OpenVINO.

    python -m experiments.export_strategies [--shape 1x3x192x320] [--iters 5] [--json out.json]

Exports each combination with `elan_deploy.export.export_onnx` (verified against the reference
on probe images), then times ONNX Runtime CPU (fp32) and OpenVINO CPU (f32 pinned with
INFERENCE_PRECISION_HINT, model reshaped to the static shape) on one natural image, and checks
both outputs against the reference ELAN at that shape. Runs are interleaved round-robin over all
variants, so background load on a shared machine hits every variant alike; the table reports
the median (and min) of `--iters` runs after `--warmup` runs. Opset-23 rows are run for the
"sdpa" strategy only: that is where the fused Attention op appears; "shared" at 23 is the
opset-17 graph with a new version number.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from elan_deploy.bench.latency import time_interleaved
from elan_deploy.export import ATTENTION_STRATEGIES, SHIFT_STRATEGIES, WINDOW_STRATEGIES, ExportConfig, export_onnx, parse_shape
from elan_deploy.model import load_bundled

ROOT = Path(__file__).resolve().parents[1]  # the repository; its sibling ../shared/data holds the datasets


@dataclass
class Row:
    shift: str
    attention: str
    windows: str
    opset: int
    nodes: int
    attention_ops: int
    export_s: float
    ort_ms: list[float] = field(default_factory=list)
    ov_ms: list[float] = field(default_factory=list)
    ort_err: float = float("nan")
    ov_err: float = float("nan")

    @property
    def name(self) -> str:
        return f"{self.shift}/{self.attention}/{self.windows}@{self.opset}"


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def natural_image(shape: tuple[int, ...]) -> np.ndarray:
    """N,3,H,W float32 0..255 crops of real photos (reflect-tiled if the photo is smaller)."""
    from PIL import Image

    n, _, h, w = shape
    data = ROOT.parent / "shared" / "data"
    files = sorted((data / "T91").glob("*.png")) + sorted((data / "Set5" / "LR_bicubic" / "X4").glob("*.png"))
    if not files:
        from elan_deploy.export.verify import probe_image

        print("no natural images under ../shared/data; using the smooth probe image", file=sys.stderr)
        return probe_image(n, h, w)
    files.sort(key=lambda p: -np.prod(Image.open(p).size))  # largest first: least tiling
    crops = []
    for i in range(n):
        img = np.asarray(Image.open(files[i % len(files)]).convert("RGB"), dtype=np.float32).transpose(2, 0, 1)
        reps = (1, -(-h // img.shape[1]), -(-w // img.shape[2]))
        crops.append(np.tile(img, reps)[:, :h, :w] if any(r > 1 for r in reps[1:]) else img[:, :h, :w])
    return np.ascontiguousarray(np.stack(crops))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="1x3x192x320", help="input N x 3 x H x W (H, W multiples of 16)")
    parser.add_argument("--iters", type=int, default=5, help="timed runs per variant and runtime [5]")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first [1]")
    parser.add_argument("--opsets", default="17,23", help="comma-separated opsets [17,23]")
    parser.add_argument("--shifts", default=",".join(SHIFT_STRATEGIES))
    parser.add_argument("--attentions", default=",".join(ATTENTION_STRATEGIES))
    parser.add_argument("--windows", default=",".join(WINDOW_STRATEGIES))
    parser.add_argument("--keep", type=Path, help="keep the exported ONNX files in this folder")
    parser.add_argument("--json", type=Path, help="write rows and machine info as JSON here")
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    args = parser.parse_args(argv)

    import onnxruntime as ort
    import torch

    try:
        import openvino as ov
    except ImportError:
        ov = None
        print("openvino not importable: OpenVINO columns stay empty", file=sys.stderr)

    shape = parse_shape(args.shape)
    loaded = load_bundled()
    x = natural_image(shape)
    with torch.no_grad():
        t0 = time.perf_counter()
        reference = loaded.model(torch.from_numpy(x)).numpy()
        torch_s = time.perf_counter() - t0

    folder = args.keep or Path(tempfile.mkdtemp(prefix="elan-export-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    runners: list[tuple[Row, str, Callable[[], object]]] = []
    for opset in (int(o) for o in args.opsets.split(",")):
        for shift in args.shifts.split(","):
            for attention, windows in ((a, w) for a in args.attentions.split(",") for w in args.windows.split(",")):
                if opset >= 23 and attention != "sdpa":
                    continue
                config = ExportConfig(shift=shift, attention=attention, windows=windows, opset=opset)
                path = folder / f"elan-light-x4.{shift}-{attention}-{windows}-op{opset}.onnx"
                report = export_onnx(loaded, path, config)
                row = Row(shift, attention, windows, opset, report.node_count, report.attention_ops, round(report.seconds, 1))
                rows.append(row)
                session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                row.ort_err = float(np.abs(session.run(None, {"lr": x})[0] - reference).max())
                runners.append((row, "ort", lambda s=session: s.run(None, {"lr": x})))
                if ov is not None:
                    core = ov.Core()
                    model = core.read_model(str(path))
                    model.reshape({"lr": list(shape)})
                    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"})
                    request = compiled.create_infer_request()
                    row.ov_err = float(np.abs(request.infer({0: x})[0] - reference).max())
                    hint = compiled.get_property("INFERENCE_PRECISION_HINT")
                    ov_precision = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
                    ov_threads = int(compiled.get_property("INFERENCE_NUM_THREADS"))
                    runners.append((row, "ov", lambda r=request: r.infer({0: x})))
                print(f"exported {row.name}: {row.nodes} nodes, {row.export_s} s", file=sys.stderr)

    rounds_done = itertools.count(1)

    def progress(i: int) -> None:
        if i == len(runners) - 1:
            print(f"timed round {next(rounds_done)}/{args.iters} done", file=sys.stderr)

    times = time_interleaved(dict(enumerate(run for _, _, run in runners)), args.iters, warmup=args.warmup, after_run=progress)
    for (row, runtime, _), seconds in zip(runners, times.values()):
        (row.ort_ms if runtime == "ort" else row.ov_ms).extend(t * 1e3 for t in seconds)

    def med(v: list[float]) -> str:
        return f"{statistics.median(v):.0f} (min {min(v):.0f})" if v else "-"

    machine = {
        "cpu": cpu_model(), "logical_cpus": os.cpu_count(), "shape": list(shape), "iters": args.iters, "warmup": args.warmup,
        "onnxruntime": ort.__version__, "openvino": ov.get_version() if ov is not None else None,
        "torch": torch.__version__, "ort_threads": "default (intra-op = physical cores)",
        "openvino_precision": ov_precision if ov is not None else None, "openvino_threads": ov_threads if ov is not None else None,
        "reference_torch_eager_s": round(torch_s, 3),
    }
    from rich.console import Console
    from rich.table import Table

    columns = ("shift/attention/windows@opset", "nodes", "Attention ops", "ORT fp32 ms", "OV f32 ms", "ORT max|Δ|", "OV max|Δ|")
    cells = [(r.name, str(r.nodes), str(r.attention_ops), med(r.ort_ms), med(r.ov_ms), f"{r.ort_err:.1e}", f"{r.ov_err:.1e}") for r in rows]
    table = Table(title=f"ELAN-light x4 export strategies, {args.shape}, {machine['cpu']} ({os.cpu_count()} CPUs): median (min) of {args.iters} runs")
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    for cell in cells:
        table.add_row(*cell)
    Console(width=max(140, Console().width)).print(table)
    if args.markdown:
        print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
        for cell in cells:
            print("| " + " | ".join(cell) + " |")
    print(f"machine: {json.dumps(machine)}")
    if args.json:
        from elan_deploy.fileio import write_json_atomic

        write_json_atomic(args.json, {"machine": machine, "rows": [asdict(r) | {"name": r.name} for r in rows]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
