"""PyTorch: the reference model in eager mode (fp32, or bf16 autocast on CPU).

It is the yardstick the other engines are compared to, so it runs the reference `ELAN` (with the
range guard's clamps, unless the source is unguarded) rather than the rewritten deploy graph.
Nothing is built or cached.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from elan_deploy.errors import ElanDeployError
from elan_deploy.runtimes.base import DEFAULT_SHAPES, BuildOptions, Engine, EngineInfo, Precision, ShapeRange, check_input
from elan_deploy.runtimes.source import ModelSource


class TorchEngine:
    def __init__(self, model: torch.nn.Module, precision: Precision, threads: int | None = None) -> None:
        self.model = model.eval()
        self.precision = precision
        if threads:
            torch.set_num_threads(threads)
        self.info = EngineInfo(
            runtime="torch", runtime_version=torch.__version__, precision=precision,
            precision_used=precision.value, threads=torch.get_num_threads(),
        )

    def __call__(self, x: np.ndarray) -> np.ndarray:
        tensor = torch.from_numpy(check_input(x))
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision is Precision.BF16):
            return self.model(tensor).float().numpy()


class TorchRuntime:
    name = "torch"
    extra = "torch (core dependency)"
    precisions = (Precision.FP32, Precision.BF16)
    needs_build = False
    default_shapes = DEFAULT_SHAPES

    def check(self) -> None:
        return None

    def version(self) -> str:
        return torch.__version__

    def build(self, source: ModelSource, precision: Precision, shapes: ShapeRange, out: Path, options: BuildOptions) -> None:
        raise ElanDeployError(f"runtime '{self.name}' runs the checkpoint directly; there is no engine to build")

    def load(self, engine: Path, precision: Precision, shapes: ShapeRange, options: BuildOptions) -> Engine:
        raise ElanDeployError(f"runtime '{self.name}' runs the checkpoint directly; there is no engine file to load")

    def open(self, source: ModelSource, precision: Precision, options: BuildOptions) -> TorchEngine:
        return TorchEngine(source.reference_module(), precision, options.threads)


# What a PyTorch user sets for CPU inference: inductor's freezing folds the weights into the graph
# as constants (oneDNN weight prepacking, constant folding), which needs grad disabled. Measured on
# ELAN-light x4 at 1x3x192x320, 2 threads, Zen 4: freezing 11 % faster than without, and it compiles
# sooner; `max-autotune` compiled 3x longer (248 s against 79 s per shape) and was not faster, so it
# is left out: the bench compiles four times (two precisions, two shapes) within its time goal.
COMPILE_OPTIONS = {"freezing": True}


class CompiledTorchEngine(TorchEngine):
    """`torch.compile` of the reference model, set up as a PyTorch user would for CPU inference.

    The headline baseline: an engine is worth its build only if it beats this. Inductor with
    freezing, called under `torch.no_grad()` (freezing applies only when grad is off).
    Compiled per input shape (`dynamic=False`), so the first call at a new shape pays the
    compilation; the benchmark counts that as build time, not latency.
    """

    def __init__(self, model: torch.nn.Module, precision: Precision, threads: int | None = None) -> None:
        super().__init__(torch.compile(model.eval(), dynamic=False, options=dict(COMPILE_OPTIONS)), precision, threads)
        self.info.runtime = "torch-compile"
        self.info.details["inductor"] = ", ".join(f"{k}={v}" for k, v in COMPILE_OPTIONS.items())

    def __call__(self, x: np.ndarray) -> np.ndarray:
        tensor = torch.from_numpy(check_input(x))
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision is Precision.BF16):
            return self.model(tensor).float().numpy()


class TorchCompileRuntime(TorchRuntime):
    name = "torch-compile"

    def check(self) -> None:
        import shutil

        from elan_deploy.errors import RuntimeUnavailable

        if shutil.which("g++") is None and shutil.which("c++") is None:
            raise RuntimeUnavailable("torch.compile on CPU needs a C++ compiler (g++); install it, e.g. apt-get install g++")

    def open(self, source: ModelSource, precision: Precision, options: BuildOptions) -> CompiledTorchEngine:
        return CompiledTorchEngine(source.reference_module(), precision, options.threads)
