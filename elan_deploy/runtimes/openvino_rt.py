"""OpenVINO (CPU): ONNX -> IR, inference precision pinned and read back.

OpenVINO silently runs bf16 on CPUs with bf16/AMX support unless `INFERENCE_PRECISION_HINT`
is set, and silently falls back to f32 when f16 is asked for on a CPU without FP16
arithmetic, so the precision actually used is read back from the compiled model and reported.
A static shape is baked into the IR when one shape is requested (up to 60 % faster).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from elan_deploy.errors import RuntimeUnavailable
from elan_deploy.runtimes.base import BuildOptions, EngineInfo, Precision, RuntimeDefaults, ShapeRange, check_input
from elan_deploy.runtimes.source import ModelSource

IR_XML = "model.xml"
# INT8 engines run their float islands in bf16: with f32 they were ~1.4x slower at equal quality.
_HINTS = {Precision.FP32: "f32", Precision.BF16: "bf16", Precision.FP16: "f16", Precision.INT8: "bf16"}
_TYPE_NAMES = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}
# Float precision names -> OpenVINO's INFERENCE_PRECISION_HINT values (what `diff` pins per tensor run).
FLOAT_PRECISION_HINTS = {name: hint for hint, name in _TYPE_NAMES.items()}


def import_openvino():
    try:
        import openvino as ov
    except ImportError:
        raise RuntimeUnavailable("OpenVINO is not installed; pip install 'elan-deploy[openvino]'") from None
    return ov


def partial_shape(shapes: ShapeRange):
    """Static dims stay static; ranged dims become fully dynamic.

    Bounded dims make the CPU plugin pre-plan buffers for the upper bound, and the attention
    maps at 4x3x512x512 overflow its size arithmetic at compile time.
    """
    ov = import_openvino()
    return ov.PartialShape([ov.Dimension(lo) if lo == hi else ov.Dimension(-1) for lo, hi in zip(shapes.min, shapes.max)])


class OpenVINOEngine:
    def __init__(self, xml: Path, precision: Precision, options: BuildOptions) -> None:
        ov = import_openvino()
        core = ov.Core()
        config: dict[str, object] = {"INFERENCE_PRECISION_HINT": _HINTS[precision], "PERFORMANCE_HINT": "LATENCY"}
        if options.threads:
            config["INFERENCE_NUM_THREADS"] = options.threads
        self.compiled = core.compile_model(core.read_model(str(xml)), "CPU", config)
        self.request = self.compiled.create_infer_request()
        used = self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        used_name = _TYPE_NAMES.get(used, used)
        if precision is Precision.INT8:
            used_name = f"int8+{used_name}"
        self.info = EngineInfo(
            runtime="openvino",
            runtime_version=ov.get_version(),
            precision=precision,
            precision_used=used_name,
            threads=int(self.compiled.get_property("INFERENCE_NUM_THREADS")),
            details={"cpu": str(core.get_property("CPU", "FULL_DEVICE_NAME"))},
        )

    def __call__(self, x: np.ndarray) -> np.ndarray:
        result = self.request.infer({0: check_input(x)})
        return np.asarray(result[self.compiled.output(0)])


class OpenVINORuntime(RuntimeDefaults):
    name = "openvino"
    extra = "openvino"
    precisions = (Precision.FP32, Precision.BF16, Precision.FP16, Precision.INT8)

    def check(self) -> None:
        import_openvino()

    def version(self) -> str:
        return import_openvino().get_version()

    def build(self, source: ModelSource, precision: Precision, shapes: ShapeRange, out: Path, options: BuildOptions) -> None:
        ov = import_openvino()
        if precision is Precision.INT8:
            # NNCF on the same float set the T91 sensitivity search chose for the Q/DQ file:
            # equal quality and ~5 % faster than running that Q/DQ file (experiments/int8_search.py).
            from elan_deploy.calibration.nncf_int8 import nncf_int8_model

            model = nncf_int8_model(source, inference_precision=_HINTS[Precision.INT8], progress=options.on_phase)
        else:
            model = ov.convert_model(str(source.onnx_path()))
        model.reshape({model.input(0): partial_shape(shapes)})
        # Keep weights in FP32 in the IR: the precision is chosen at compile time by the hint.
        ov.save_model(model, str(out / IR_XML), compress_to_fp16=False)

    def load(self, engine: Path, precision: Precision, shapes: ShapeRange, options: BuildOptions) -> OpenVINOEngine:
        return OpenVINOEngine(engine / IR_XML, precision, options)
