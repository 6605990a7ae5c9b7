#!/usr/bin/env python
"""INT8 acceptance run: recipe search per method, test-set PSNR per runtime, OpenVINO latency.

    python -m experiments.int8_search [--methods entropy,minmax,percentile] [--datasets Set5,Set14,B100]
                                      [--iters 7] [--shape 1x3x192x320] [--json int8_results.json]

1. Search (held-out T91 only): for every `--methods` entry, `write_int8` calibrates on T91,
   measures layer-group sensitivity and keeps float what the 0.05 dB budget needs. The
   default method's file is also quantized the OpenVINO-native way (NNCF, same float set).
2. Quality (the test sets, evaluated only here, after every choice is made): Y-PSNR on
   Set5/Set14/B100 x4 (paper protocol, whole images, `Upscaler(tile=None)`) of FP32 and INT8
   on ONNX Runtime, and on OpenVINO FP32 (f32, bf16) vs INT8 Q/DQ and INT8 NNCF, each INT8
   with its float parts in f32 and in bf16 (OpenVINO's INFERENCE_PRECISION_HINT).
3. Latency (one process, interleaved round-robin, static shape): OpenVINO f32, bf16 and the
   INT8 models; median and min of `--iters` after a warm-up; then per-layer profiles
   (PERF_COUNT, aggregated by node type and exec type) of bf16 vs INT8 to show where time goes.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path

import numpy as np

from elan_deploy.bench.latency import time_interleaved
from elan_deploy.calibration.data import BUNDLED_SAMPLES
from elan_deploy.calibration.int8 import default_config, write_int8
from elan_deploy.calibration.nncf_int8 import NNCFConfig, quantize_ov, write_ir
from elan_deploy.console import print_table
from elan_deploy.datasets import load_dataset
from elan_deploy.evaluate import evaluate
from elan_deploy.export.metadata import read_props
from elan_deploy.imaging import read_image
from elan_deploy.model import load_bundled
from elan_deploy.results import machine_info
from elan_deploy.runtimes import BuildOptions, ModelSource, Precision
from elan_deploy.runtimes.base import parse_shape
from elan_deploy.runtimes.cache import default_cache_dir
from elan_deploy.runtimes.onnxruntime_rt import OnnxRuntimeEngine
from elan_deploy.upscale import Upscaler


class OVEngine:
    """An OpenVINO CPU engine with an explicit inference-precision hint (read back and reported)."""

    def __init__(self, model, hint: str, shape: tuple[int, ...] | None = None, profile: bool = False) -> None:
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(model)) if isinstance(model, (str, Path)) else model.clone()
        if shape is not None:
            model.reshape({model.input(0): list(shape)})
        config: dict[str, object] = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
        if profile:
            config["PERF_COUNT"] = True
        self.compiled = core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.hint_used = self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        self.threads = int(self.compiled.get_property("INFERENCE_NUM_THREADS"))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.request.infer({0: np.ascontiguousarray(x, dtype=np.float32)})[self.compiled.output(0)])

    def profile(self, x: np.ndarray, runs: int = 5) -> dict[str, float]:
        """Seconds per node type / exec type; each node's minimum over `runs` (robust to load)."""
        best: dict[str, tuple[str, float]] = {}
        for _ in range(runs):
            self(x)
            for info in self.request.get_profiling_info():
                if info.status.name == "EXECUTED":
                    seconds = info.real_time.total_seconds()
                    key = f"{info.node_type} / {info.exec_type}"
                    if info.node_name not in best or seconds < best[info.node_name][1]:
                        best[info.node_name] = (key, seconds)
        agg: dict[str, float] = collections.defaultdict(float)
        for key, seconds in best.values():
            agg[key] += seconds
        return dict(agg)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def search_methods(fp32: Path, methods: list[str], work: Path, reuse: bool) -> dict[str, dict]:
    out = {}
    for method in methods:
        path = work / f"elan-light-x4.int8.{method}.onnx"
        saved = path.with_suffix(".json")
        if reuse and path.is_file() and saved.is_file():
            out[method] = json.loads(saved.read_text())
            continue
        log(f"search {method}")
        report = write_int8(fp32, path, default_config(method=method), allow_over_budget=True)
        out[method] = {
            "path": str(path), "float_nodes": len(report.float_nodes), "float_groups": report.float_groups,
            "heldout_drop_db": report.score.drop_db, "heldout_se_db": report.score.stderr_db, "met": report.met,
            "seconds": report.seconds, "calibration": report.calibration,
            "top_sensitivity": [(s.group, round(s.fidelity_db, 2)) for s in report.sensitivities[:15]],
        }
        write_json(saved, out[method])
    print_table(
        "INT8 recipe search on held-out T91 (x4, budget 0.05 dB on mean + 1 s.e.)",
        ("method", "float nodes", "held-out drop (dB)", "± s.e.", "met", "calibrate s", "search s"),
        [(m, r["float_nodes"], round(r["heldout_drop_db"], 4), round(r["heldout_se_db"], 4), r["met"],
          round(r["seconds"]["calibrate"]), round(r["seconds"]["search"])) for m, r in out.items()],
    )
    return out


def quality(engines: dict[str, object], datasets: list[str], baselines: dict[str, str]) -> list[dict]:
    rows = []
    for name in datasets:
        dataset = load_dataset(name, 4)
        scores = {}
        for label, engine in engines.items():
            start = time.perf_counter()
            scores[label] = evaluate(Upscaler(engine, 4, tile=None), dataset)
            log(f"{name} {label}: {scores[label].psnr:.4f} dB ({time.perf_counter() - start:.0f} s)")
        for label, score in scores.items():
            base = baselines.get(label)
            rows.append({
                "dataset": name, "engine": label, "psnr": round(score.psnr, 4), "ssim": round(score.ssim, 4),
                "baseline": base, "drop_db": round(scores[base].psnr - score.psnr, 4) if base else None,
            })
    print_table(
        "Y-PSNR x4 (paper protocol), drop vs the FP32 engine of the same runtime",
        ("dataset", "engine", "PSNR", "SSIM", "vs", "drop (dB)"),
        [(r["dataset"], r["engine"], r["psnr"], r["ssim"], r["baseline"] or "-", r["drop_db"] if r["drop_db"] is not None else "-") for r in rows],
    )
    return rows


def latency(variants: dict[str, tuple[object, str]], shape: tuple[int, ...], iters: int, warmup: int) -> tuple[list[dict], dict]:
    image = read_image(BUNDLED_SAMPLES / "t38.png").astype(np.float32)  # natural content, 200x333
    n, _, h, w = shape
    x = np.ascontiguousarray(np.repeat(image[:h, :w].transpose(2, 0, 1)[None], n, axis=0))
    engines = {label: OVEngine(model, hint, shape) for label, (model, hint) in variants.items()}
    times = time_interleaved({label: partial(engine, x) for label, engine in engines.items()}, iters, warmup=warmup)
    ref, ref_min = statistics.median(times["fp32 bf16"]), min(times["fp32 bf16"])
    rows = [{
        "variant": label, "hint_used": engines[label].hint_used, "threads": engines[label].threads,
        "median_s": statistics.median(t), "min_s": min(t), "max_s": max(t), "vs_bf16": statistics.median(t) / ref,
        "min_vs_bf16_min": min(t) / ref_min,
    } for label, t in times.items()]
    print_table(
        f"OpenVINO {__import__('openvino').get_version().split('-')[0]} CPU latency, {'x'.join(map(str, shape))}, {iters} interleaved runs",
        ("variant", "precision used", "threads", "median s", "min s", "max s", "median ÷ bf16", "min ÷ bf16 min"),
        [(r["variant"], r["hint_used"], r["threads"], round(r["median_s"], 3), round(r["min_s"], 3), round(r["max_s"], 3),
          round(r["vs_bf16"], 3), round(r["min_vs_bf16_min"], 3)) for r in rows],
    )
    profiles = {}
    for label in ("fp32 bf16", *[k for k in variants if k.startswith("int8")]):
        model, hint = variants[label]
        engine = OVEngine(model, hint, shape, profile=True)
        engine(x)
        profiles[label] = engine.profile(x)
    keys = sorted({k for p in profiles.values() for k in p}, key=lambda k: -max(p.get(k, 0.0) for p in profiles.values()))
    print_table(
        "per-layer time by node type / exec type (PERF_COUNT, each node's min of 5 runs, s)",
        ("node type / exec type", *profiles),
        [(k, *[round(p.get(k, 0.0), 4) for p in profiles.values()]) for k in keys if max(p.get(k, 0.0) for p in profiles.values()) >= 0.002]
        + [("total", *[round(sum(p.values()), 4) for p in profiles.values()])],
    )
    categories = {
        "Convolution": "conv / matmul", "GroupConvolution": "conv / matmul", "MatMul": "conv / matmul",
        "Transpose": "data movement", "VariadicSplit": "data movement", "Concat": "data movement", "Reorder": "data movement",
        "DepthToSpace": "data movement", "Softmax": "softmax", "Subgraph": "(de)quantize / eltwise",
    }
    summary = {label: collections.defaultdict(float) for label in profiles}
    for label, prof in profiles.items():
        for key, seconds in prof.items():
            summary[label][categories.get(key.split(" / ")[0], "other")] += seconds
    names = ("conv / matmul", "data movement", "softmax", "(de)quantize / eltwise", "other")
    print_table(
        "where the time goes (s, from the profile above)",
        ("variant", *names, "total"),
        [(label, *[round(cat[n], 3) for n in names], round(sum(cat.values()), 3)) for label, cat in summary.items()],
    )
    return rows, {"by_node_type": profiles, "by_category": {k: dict(v) for k, v in summary.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, help="FP32 ONNX [export the bundled ELAN-light x4]")
    parser.add_argument("--methods", default="entropy,minmax,percentile")
    parser.add_argument("--datasets", default="Set5,Set14,B100")
    parser.add_argument("--shape", default="1x3x192x320")
    parser.add_argument("--iters", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--work", type=Path, default=default_cache_dir().parent / "bench-int8")
    parser.add_argument("--reuse", action="store_true", help="reuse INT8 files a previous run left in --work")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--json", type=Path, default=default_cache_dir().parent / "bench-int8" / "int8_results.json")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    methods = args.methods.split(",")
    source = ModelSource(load_bundled(), onnx=args.onnx, work_dir=default_cache_dir().parent / "onnx")
    fp32 = Path(source.onnx_path())
    results: dict[str, object] = {"schema": "elan-deploy/int8-bench/1", "machine": machine_info(), "fp32_onnx": str(fp32)}

    results["search"] = search = search_methods(fp32, methods, args.work, args.reuse)
    default = methods[0]
    qdq = Path(search[default]["path"])
    float_nodes = [n for n in read_props(qdq)["int8_float_nodes"].split(",") if n]
    nncf_xml = args.work / "elan-light-x4.int8.nncf.xml"
    if not (args.reuse and nncf_xml.is_file()):
        log("NNCF quantize (same float set)")
        start = time.perf_counter()
        nncf_model, ignored, _ = quantize_ov(fp32, 4, float_nodes, NNCFConfig())
        write_ir(nncf_model, nncf_xml)
        results["nncf"] = {"xml": str(nncf_xml), "config": asdict(NNCFConfig()), "ignored": len(ignored), "seconds": time.perf_counter() - start}

    if not args.skip_quality:
        engines: dict[str, object] = {
            "ort fp32": OnnxRuntimeEngine(fp32, Precision.FP32, BuildOptions()),
            **{f"ort int8 {m}": OnnxRuntimeEngine(Path(r["path"]), Precision.INT8, BuildOptions()) for m, r in search.items()},
            "ov f32": OVEngine(fp32, "f32"),
            "ov bf16": OVEngine(fp32, "bf16"),
            "ov int8 qdq+f32": OVEngine(qdq, "f32"),
            "ov int8 qdq+bf16": OVEngine(qdq, "bf16"),
            "ov int8 nncf+f32": OVEngine(nncf_xml, "f32"),
            "ov int8 nncf+bf16": OVEngine(nncf_xml, "bf16"),
        }
        baselines = {k: ("ort fp32" if k.startswith("ort int8") else "ov f32") for k in engines if k not in ("ort fp32", "ov f32")}
        results["quality"] = quality(engines, args.datasets.split(","), baselines)
        write_json(args.json, results)

    if not args.skip_latency:
        shape = parse_shape(args.shape)
        # The quality-blind floor: every Conv/MatMul in INT8 (no float set), to show what INT8
        # could buy at most on this CPU with this graph.
        everything = args.work / "elan-light-x4.int8.all.onnx"
        if not (args.reuse and everything.is_file()):
            write_int8(fp32, everything, default_config(method=default, budget_db=100.0))
        variants = {
            "fp32 f32": (fp32, "f32"), "fp32 bf16": (fp32, "bf16"),
            "int8 qdq+f32": (qdq, "f32"), "int8 qdq+bf16": (qdq, "bf16"),
            "int8 nncf+f32": (nncf_xml, "f32"), "int8 nncf+bf16": (nncf_xml, "bf16"),
            "int8 all-layers+bf16": (everything, "bf16"),
        }
        rows, profiles = latency(variants, shape, args.iters, args.warmup)
        results["latency"] = rows
        results["profiles"] = profiles
    write_json(args.json, results)
    log(f"wrote {args.json}")
    return 0


def write_json(path: Path, obj: object) -> None:
    from elan_deploy.fileio import write_json_atomic

    write_json_atomic(path, json.loads(json.dumps(obj, default=str)))


if __name__ == "__main__":
    sys.exit(main())
