"""ONNX Runtime: the portable reference runtime (CPU EP; CUDA / TensorRT EPs when present).

The engine file is an ONNX file: the exported FP32 model, the typed FP16 model, or the Q/DQ
INT8 model. ONNX Runtime optimises it when the session is created.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from elan_deploy.errors import RuntimeUnavailable
from elan_deploy.runtimes.base import BuildOptions, EngineInfo, Precision, RuntimeDefaults, ShapeRange, check_input
from elan_deploy.runtimes.source import ModelSource, copy_onnx

ENGINE_FILE = "model.onnx"


class OnnxRuntimeEngine:
    def __init__(self, path: Path, precision: Precision, options: BuildOptions) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if options.threads:
            so.intra_op_num_threads = options.threads
        so.log_severity_level = 3
        # From its second call on, the memory pattern keeps a second set of buffers beside the first
        # (~7.3 instead of ~3.6 KB per input pixel) and measured no faster: off, a tiled 8000x6000
        # upscale stays under 1 GiB (BENCHMARKS.md).
        so.enable_mem_pattern = False
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        self.session = ort.InferenceSession(str(path), so, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        self.info = EngineInfo(
            runtime="onnxruntime",
            runtime_version=ort.__version__,
            precision=precision,
            precision_used=precision.value,
            threads=options.threads,
            device="GPU" if providers[0].startswith("CUDA") else "CPU",
            details={"providers": ",".join(self.session.get_providers())},
        )

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: check_input(x)})[0]


class OnnxRuntimeRuntime(RuntimeDefaults):
    name = "onnxruntime"
    extra = "onnxruntime (core dependency)"
    precisions = (Precision.FP32, Precision.FP16, Precision.INT8)

    def check(self) -> None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise RuntimeUnavailable("onnxruntime is not installed; pip install onnxruntime") from None

    def version(self) -> str:
        import onnxruntime

        return onnxruntime.__version__

    def build(self, source: ModelSource, precision: Precision, shapes: ShapeRange, out: Path, options: BuildOptions) -> None:
        target = out / ENGINE_FILE
        if precision is Precision.FP32:
            copy_onnx(source.onnx_path(), target)
        elif precision is Precision.FP16:
            from elan_deploy.calibration.fp16 import write_fp16

            write_fp16(source.onnx_path(), target)
        else:
            from elan_deploy.calibration.int8 import int8_onnx_for

            shutil.copyfile(int8_onnx_for(source, progress=options.on_phase), target)

    def load(self, engine: Path, precision: Precision, shapes: ShapeRange, options: BuildOptions) -> OnnxRuntimeEngine:
        return OnnxRuntimeEngine(engine / ENGINE_FILE, precision, options)
