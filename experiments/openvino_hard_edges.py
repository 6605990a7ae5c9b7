"""How far each INT8 engine is from FP32 on hard edges, on T91 alone: OpenVINO's own floor.

    python -m experiments.openvino_hard_edges [--threads 2] [--also-f32]

The INT8 recipe's hard-edge floor is measured on ONNX Runtime running the Q/DQ file; the
`openvino int8` engine is NNCF's model of the same float set, run with its float parts in the
CPU's inference precision (bf16 where the CPU has it). This prints, for the range-guarded bundled
model, the worst and median fidelity to the FP32 model (PSNR, outputs clipped to 0..255) over the
held-out T91 crops cut to saturated colours (`calibration.data.hard_edge_crops`) of:
- ONNX Runtime running the default Q/DQ file (what the recipe's floor measured);
- OpenVINO running that same Q/DQ file, with bf16 and with f32 float parts;
- NNCF's model of the recipe's float set alone (`NNCFConfig(hard_edge_floor_db=None)`), with bf16
  and with f32 float parts;
- NNCF's model as `openvino int8` builds it (OpenVINO's own floor, `calibration.nncf_hard_edges`);
- the FP32 model compiled bf16: what the runtime's float arithmetic reaches on its own.
and the floor the OpenVINO model records in its rt_info. `--also-f32` adds the model OpenVINO's
own floor builds where the float parts run f32 (a CPU without bf16), built here by asking for f32.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from elan_deploy.calibration.data import calibration_images, heldout_samples
from elan_deploy.calibration.int8 import default_config, int8_onnx_for
from elan_deploy.calibration.nncf_hard_edges import OpenVINOHardEdges
from elan_deploy.calibration.nncf_int8 import ENGINE_INFERENCE_PRECISION, RT_INFO_SECTION, NNCFConfig, nncf_int8_model
from elan_deploy.calibration.sensitivity import HardEdgeEvaluator
from elan_deploy.console import print_table
from elan_deploy.cpu import cpu_caps
from elan_deploy.model import load_bundled
from elan_deploy.results import machine_info
from elan_deploy.runtimes import ModelSource


def fidelities(evaluator: HardEdgeEvaluator, model) -> np.ndarray:
    """PSNR to FP32 per crop (0..255 outputs)."""
    mses = np.array([np.mean((o - r) ** 2) for o, r in zip(evaluator.outputs(model), evaluator.reference)])
    return 10 * np.log10(255.0**2 / np.maximum(mses, 1e-12))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--also-f32", action="store_true", help="also build and score the floor's model for f32 float parts")
    args = parser.parse_args()
    import openvino as ov

    source = ModelSource(load_bundled(), guard=True)
    fp32 = Path(source.onnx_path())
    qdq = int8_onnx_for(source)
    samples = heldout_samples(calibration_images(None), source.scale, default_config().heldout_size)
    onnxruntime = HardEdgeEvaluator(fp32, samples, args.threads)
    checkers = {hint: OpenVINOHardEdges(fp32, samples, hint, args.threads) for hint in (ENGINE_INFERENCE_PRECISION, "f32")}
    engine = checkers[ENGINE_INFERENCE_PRECISION]
    shipped = nncf_int8_model(source)
    alone = nncf_int8_model(source, NNCFConfig(hard_edge_floor_db=None))
    rows = [
        ("onnxruntime", "Q/DQ file (the recipe's floor)", "int8+fp32", fidelities(onnxruntime, qdq)),
        ("openvino", "Q/DQ file", f"int8+{ENGINE_INFERENCE_PRECISION}", fidelities(engine, qdq)),
        ("openvino", "Q/DQ file", "int8+f32", fidelities(checkers["f32"], qdq)),
        ("openvino", "NNCF, the recipe's float set alone", f"int8+{ENGINE_INFERENCE_PRECISION}", fidelities(engine, alone)),
        ("openvino", "NNCF, the recipe's float set alone", "int8+f32", fidelities(checkers["f32"], alone)),
        ("openvino", "NNCF with its own floor (`openvino int8`)", f"int8+{ENGINE_INFERENCE_PRECISION}", fidelities(engine, shipped)),
        ("openvino", "FP32 model", ENGINE_INFERENCE_PRECISION, fidelities(engine, ov.Core().read_model(str(fp32)))),
    ]
    models = {ENGINE_INFERENCE_PRECISION: shipped}
    if args.also_f32:
        models["f32"] = nncf_int8_model(source, inference_precision="f32")
        rows.append(("openvino", "NNCF with its own floor, built for f32 float parts", "int8+f32", fidelities(checkers["f32"], models["f32"])))
    info = machine_info()
    print_table(
        f"fidelity to FP32 on {len(onnxruntime.crops)} held-out T91 crops cut to saturated colours; "
        f"{info['cpu']} ({info.get('cpu_id')}), {cpu_caps().describe()}",
        ("runtime", "model", "arithmetic asked", "worst dB", "median dB"),
        [(r, m, a, f"{d.min():.2f}", f"{np.median(d):.2f}") for r, m, a, d in rows],
    )
    for arithmetic, model in models.items():
        record = {key: model.get_rt_info([RT_INFO_SECTION, key]).astype(str) for key in (
            "hard_edge_floor_db", "hard_edge_float_arithmetic_db", "hard_edge_worst_db", "hard_edge_inference_precision", "hard_edge_groups",
        ) if model.has_rt_info([RT_INFO_SECTION, key])}
        print(f"openvino int8 built for {arithmetic} float parts records:", record or "no floor (unguarded model or none asked)")


if __name__ == "__main__":
    main()
