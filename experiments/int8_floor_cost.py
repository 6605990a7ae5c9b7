"""What the INT8 recipe's hard-edge floor costs in latency: INT8 with and without it, one run.

    python -m experiments.int8_floor_cost [--shape 1x3x192x320] [--rounds 7] [--iters 3] [--threads 2]

The floor (`calibration.sensitivity`) keeps more layer groups float so that INT8 holds 30 dB
to FP32 on hard-edged inputs. This builds, from the range-guarded bundled model, the Q/DQ file
of the default recipe and of the budget-only recipe (`hard_edge_floor_db=None`), runs each on
ONNX Runtime and, quantized by NNCF on the same float set, on OpenVINO (float parts as the
`openvino int8` engine runs them: bf16 where the CPU has it), beside ONNX Runtime FP32 and
OpenVINO bf16, and times all of them on one natural image in interleaved rounds. The OpenVINO
default engine also holds its own floor (`calibration.nncf_hard_edges`, more groups float); the
row "recipe's floor only" is its model without that (`NNCFConfig(hard_edge_floor_db=None)`).
Prints p50 and min per engine, the float node count and the p50 ratio to the budget-only INT8 engine.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from functools import partial
from pathlib import Path

from elan_deploy.bench.latency import latency_image, natural_input, time_interleaved
from elan_deploy.calibration.int8 import default_config, int8_onnx_for
from elan_deploy.calibration.nncf_int8 import NNCFConfig, float_nodes_of, nncf_int8_model
from elan_deploy.console import print_table
from elan_deploy.cpu import cpu_caps
from elan_deploy.export.metadata import read_props
from elan_deploy.model import load_bundled
from elan_deploy.results import machine_info
from elan_deploy.runtimes import EngineLoader, ModelSource, ShapeRange
from elan_deploy.runtimes.base import parse_shape


def _openvino_variant(source: ModelSource, float_nodes: list[str], shape, threads: int):
    """OpenVINO INT8 quantized by NNCF on exactly `float_nodes` (no floor of OpenVINO's own),
    compiled as the `openvino int8` engine compiles its model (the engine loader builds only the
    default)."""
    import openvino as ov

    model = nncf_int8_model(source, NNCFConfig(float_nodes=tuple(float_nodes), hard_edge_floor_db=None))
    model.reshape(list(shape))
    # the hint `runtimes/openvino_rt.py` gives INT8 engines: float parts bf16 where the CPU has it
    config = {"INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    compiled = ov.Core().compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    return lambda x: request.infer({0: x}), f"int8+{compiled.get_property('INFERENCE_PRECISION_HINT').to_string()}"


def _openvino_floor_nodes(source: ModelSource) -> int:
    """How many more nodes the `openvino int8` engine keeps float for OpenVINO's own floor (its rt_info)."""
    import onnx

    from elan_deploy.calibration.layers import layer_groups
    from elan_deploy.calibration.nncf_int8 import RT_INFO_SECTION

    model = nncf_int8_model(source)
    key = [RT_INFO_SECTION, "hard_edge_groups"]
    groups = set(model.get_rt_info(key).astype(str).split(",")) if model.has_rt_info(key) else set()
    return sum(len(g.nodes) for g in layer_groups(onnx.load(str(source.onnx_path()))) if g.name in groups)


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
    static = ShapeRange.static(shape)
    with tempfile.TemporaryDirectory() as scratch:
        open_engine = partial(EngineLoader, shapes=static, threads=args.threads, cache_root=Path(scratch) / "engines")
        engines = {
            ("onnxruntime fp32", ""): open_engine(source, "onnxruntime", "fp32").open(),
            ("openvino bf16", ""): open_engine(source, "openvino", "bf16").open(),
            ("onnxruntime int8", "floor (default)"): open_engine(source, "onnxruntime", "int8").open(),
            # the budget-only Q/DQ file, run as ONNX Runtime runs any Q/DQ file
            ("onnxruntime int8", "budget only"): open_engine(ModelSource(source.loaded, guard=True, onnx=files["budget only"]), "onnxruntime", "fp32").open(),
            ("openvino int8", "floor (default)"): open_engine(source, "openvino", "int8").open(),
        }
        calls = {key: partial(engine, x) for key, engine in engines.items()}
        ran = {key: engine.info.precision_used for key, engine in engines.items()}
        ran[("onnxruntime int8", "budget only")] = "int8"
        for recipe, nodes in (("recipe's floor only", floats["floor (default)"]), ("budget only", floats["budget only"])):
            run, used = _openvino_variant(source, nodes, shape, args.threads)
            calls[("openvino int8", recipe)], ran[("openvino int8", recipe)] = partial(run, x), used
        kept = {(cell, recipe): len(floats[recipe]) for cell, recipe in calls if recipe in floats}
        kept[("openvino int8", "recipe's floor only")] = len(floats["floor (default)"])
        kept[("openvino int8", "floor (default)")] = len(floats["floor (default)"]) + _openvino_floor_nodes(source)
        times = time_interleaved(calls, args.rounds, args.iters)
    p50 = {key: statistics.median(values) * 1000 for key, values in times.items()}
    rows = []
    for (cell, recipe), value in p50.items():
        base = p50.get((cell, "budget only"))
        rows.append((
            cell, recipe or "–", ran[(cell, recipe)], str(kept.get((cell, recipe), "–")), f"{value:.1f}", f"{min(times[(cell, recipe)]) * 1000:.1f}",
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
