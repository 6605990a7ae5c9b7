"""What the INT8 recipe's hard-edge floor costs in latency: INT8 with and without it, one run.

    python -m experiments.int8_floor_cost [--shape 1x3x192x320] [--rounds 7] [--iters 3] [--threads 2]

The floor (`calibration.sensitivity`) keeps more layer groups float so that INT8 holds 30 dB
to FP32 on hard-edged inputs. This builds, from the range-guarded bundled model, the Q/DQ file
of the default recipe and of the budget-only recipe (`hard_edge_floor_db=None`), runs each on
ONNX Runtime and, quantized by NNCF on the same float set, on OpenVINO (float parts as the
`openvino int8` engine runs them: bf16 where the CPU has it), beside ONNX Runtime FP32 and
OpenVINO bf16, and times all of them on one natural image in interleaved rounds. Prints p50
and min per engine, the float node count and the p50 ratio to the budget-only INT8 engine.
"""

from __future__ import annotations

import argparse
import statistics
from functools import partial

from elan_deploy.bench.latency import latency_image, natural_input, time_interleaved
from elan_deploy.calibration.int8 import default_config, int8_onnx_for
from elan_deploy.calibration.nncf_int8 import NNCFConfig, float_nodes_of, nncf_int8_model
from elan_deploy.console import print_table
from elan_deploy.cpu import cpu_caps
from elan_deploy.export.metadata import read_props
from elan_deploy.model import load_bundled
from elan_deploy.results import machine_info
from elan_deploy.runtimes import ModelSource
from elan_deploy.runtimes.base import parse_shape


def _ort(path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})


def _openvino(model, shape, hint: str, threads: int):
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(model)) if not hasattr(model, "get_ordered_ops") else model
    model.reshape(list(shape))
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads})
    request = compiled.create_infer_request()
    return lambda x: request.infer({0: x}), compiled.get_property("INFERENCE_PRECISION_HINT").to_string()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="1x3x192x320")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    shape = parse_shape(args.shape)
    x = natural_input(shape, latency_image())
    source = ModelSource(load_bundled(), guard=True)
    files = {"floor (default)": int8_onnx_for(source), "budget only": int8_onnx_for(source, default_config(hard_edge_floor_db=None))}
    floats = {recipe: [n for n in read_props(path).get("int8_float_nodes", "").split(",") if n] for recipe, path in files.items()}
    assert floats["floor (default)"] == float_nodes_of(source)
    calls, ran, kept = {}, {}, {}
    calls[("onnxruntime fp32", "")] = partial(_ort(source.onnx_path(), args.threads), x)
    bf16, ran[("openvino bf16", "")] = _openvino(source.onnx_path(), shape, "bf16", args.threads)
    calls[("openvino bf16", "")] = partial(bf16, x)
    for recipe, path in files.items():
        calls[("onnxruntime int8", recipe)] = partial(_ort(path, args.threads), x)
        model = nncf_int8_model(source, NNCFConfig(float_nodes=tuple(floats[recipe])))
        run, used = _openvino(model, shape, "bf16", args.threads)
        calls[("openvino int8", recipe)] = partial(run, x)
        ran[("openvino int8", recipe)] = f"int8+{used}"
        ran[("onnxruntime int8", recipe)] = "int8"
        kept[recipe] = len(floats[recipe])
    ran[("onnxruntime fp32", "")] = "fp32"
    times = time_interleaved(calls, args.rounds, args.iters)
    p50 = {key: statistics.median(values) * 1000 for key, values in times.items()}
    rows = []
    for (cell, recipe), value in p50.items():
        base = p50.get((cell, "budget only"))
        rows.append((
            cell, recipe or "–", ran[(cell, recipe)], str(kept.get(recipe, "–")), f"{value:.1f}", f"{min(times[(cell, recipe)]) * 1000:.1f}",
            f"{value / base:.3f}" if base else "–",
        ))
    info = machine_info()
    print_table(
        f"INT8 hard-edge floor cost at {args.shape}, {args.threads} threads, {args.rounds}x{args.iters} interleaved runs; "
        f"{info['cpu']} ({info.get('cpu_id')}), {cpu_caps().describe()}",
        ("cell", "recipe", "ran", "float nodes", "p50 ms", "min ms", "p50 / budget only"), rows,
    )


if __name__ == "__main__":
    main()
