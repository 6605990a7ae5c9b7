"""TensorRT (NVIDIA GPU): ONNX -> serialized plan through Polygraphy's loaders; run with `execute_async_v3`.

Written against the TensorRT 10.x and 11.x Python API. The build is a chain of Polygraphy
loaders, each a small callable (DESIGN.md, "Models to learn from"):

    SaveEngine(EngineFromNetwork(NetworkFromOnnxPath(onnx, strongly_typed=...),
                                 CreateConfig(tf32=False, fp16=..., profiles=[Profile from the ShapeRange],
                                              load_timing_cache=...),
                                 save_timing_cache=...), plan)

so the code that needs TensorRT is Polygraphy's, and what is ours (which ONNX, which flags,
which profile) is plain data that is tested without a GPU. Precision travels inside the ONNX
file (DESIGN.md): TensorRT 11 removed `BuilderFlag.FP16`/`INT8` and the implicit INT8
calibrators, and its networks are always strongly typed, so

- fp32 -> the exported FP32 ONNX, strongly typed;
- fp16 -> the typed FP16 ONNX from `calibration.fp16` (FP32 attention logits and softmax),
          strongly typed; only a TensorRT without strong typing (before 9.0) gets the FP16
          builder flag on the FP32 ONNX instead;
- int8 -> the explicit Q/DQ ONNX from `calibration.int8`, strongly typed, no calibrator.

TF32 is off in every case (`CreateConfig(tf32=False)` clears the flag TensorRT sets by
default), so the FP32 layers, the attention islands included, are FP32.

Device buffers are torch CUDA tensors (torch is a core dependency), so neither pycuda nor
cuda-python is needed. The optimization profile comes from the ShapeRange: a static range
gives a static engine. The builder's timing cache is kept in the engine folder and, when a
shared path is given, seeded from it and copied back to it so rebuilds for other shapes are fast.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from elan_deploy.errors import ElanDeployError, RuntimeUnavailable
from elan_deploy.fileio import atomic_path
from elan_deploy.runtimes.base import BuildOptions, EngineInfo, Precision, RuntimeDefaults, Shape, ShapeRange, check_input
from elan_deploy.runtimes.source import ModelSource

PLAN = "model.plan"
TIMING_CACHE = "timing.cache"
BUILD_INFO = "trt-build.json"
TIMING_CACHE_ENV = "ELAN_DEPLOY_TRT_TIMING_CACHE"  # optional shared timing-cache file
INPUT_NAME = "lr"  # the names export.onnx_export gives the ONNX graph's input and output
OUTPUT_NAME = "sr"
INSTALL_HINT = "TensorRT is not installed; pip install 'elan-deploy[tensorrt]' on a machine with an NVIDIA GPU and CUDA"
NO_GPU = "TensorRT needs an NVIDIA GPU with CUDA; none was found (torch.cuda.is_available() is False)"


def _import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except (ImportError, OSError):  # OSError: the wheel is there but libnvinfer cannot load
        raise RuntimeUnavailable(INSTALL_HINT) from None
    return trt


def _require_cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        raise RuntimeUnavailable(NO_GPU)


def _logger(trt: Any) -> Any:
    """Polygraphy's TensorRT logger: the builder loaders use it, and TensorRT wants one per process."""
    from polygraphy.backend.trt import util as trt_util

    return trt_util.get_trt_logger()


def major_version(version: str) -> int:
    return int(version.split(".")[0])


# --- what to build ---------------------------------------------------------------------------


def profile_shapes(shapes: ShapeRange) -> dict[str, tuple[Shape, Shape, Shape]]:
    """The optimization profile for the network input: {"lr": (min, opt, max)}."""
    return {INPUT_NAME: (tuple(shapes.min), tuple(shapes.opt), tuple(shapes.max))}


@dataclass(frozen=True)
class Recipe:
    """How a precision is built: which ONNX file, strongly typed or not, the FP16 flag or not."""

    onnx: str  # "fp32" | "fp16" (typed FP16 ONNX) | "int8" (Q/DQ ONNX)
    strongly_typed: bool
    fp16_flag: bool = False

    @property
    def label(self) -> str:
        typing = "strongly typed" if self.strongly_typed else "weakly typed"
        return f"{self.onnx} ONNX, {typing}" + (", FP16 flag" if self.fp16_flag else "")


def recipe_for(precision: Precision, version: str, has_strongly_typed: bool) -> Recipe:
    """TensorRT 11 (and any build that has strong typing) takes precision from the ONNX types;
    only an older TensorRT falls back to the weakly typed FP16 builder flag."""
    typed = has_strongly_typed or major_version(version) >= 11
    if precision is Precision.FP32:
        return Recipe("fp32", strongly_typed=typed)
    if precision is Precision.FP16:
        return Recipe("fp16", strongly_typed=True) if typed else Recipe("fp32", strongly_typed=False, fp16_flag=True)
    if precision is Precision.INT8:
        return Recipe("int8", strongly_typed=typed)
    raise ElanDeployError(f"TensorRT does not build {precision.value}; choose fp32, fp16 or int8")


def onnx_for(recipe: Recipe, source: ModelSource, folder: Path, int8_config=None, int8_calib_dir: Path | None = None) -> Path:
    """The ONNX file a recipe builds from: the export, a typed FP16 copy written to `folder`
    (an input only, removed after the build), or the INT8 Q/DQ file every runtime shares
    (`int8_onnx_for`, cached next to the export; the toolkit's recipe and calibration images
    unless `int8_config`/`int8_calib_dir` say otherwise)."""
    if recipe.onnx == "fp16":
        from elan_deploy.calibration.fp16 import write_fp16

        return write_fp16(source.onnx_path(), folder / "model.fp16.onnx")
    if recipe.onnx == "int8":
        from elan_deploy.calibration.int8 import int8_onnx_for

        return Path(int8_onnx_for(source, int8_config, int8_calib_dir))
    return Path(source.onnx_path())


# --- build ---------------------------------------------------------------------------------


def profile_for(shapes: ShapeRange):
    """The shape range as a Polygraphy `Profile` (one optimization profile)."""
    from polygraphy.backend.trt import Profile

    profile = Profile()
    for name, (lo, opt, hi) in profile_shapes(shapes).items():
        profile.add(name, min=lo, opt=opt, max=hi)
    return profile


def strongly_typed_flag(recipe: Recipe, has_flag: bool) -> bool:
    """Ask for STRONGLY_TYPED when the recipe is typed and the bindings have the flag; TensorRT 11
    networks are strongly typed without it (Polygraphy would refuse a flag that is not there)."""
    return recipe.strongly_typed and has_flag


def build_loaders(
    onnx_path: Path, recipe: Recipe, shapes: ShapeRange, plan: Path, timing_cache: Path,
    shared_cache: Path | None = None, has_typed_flag: bool = True,
):
    """The Polygraphy loader chain that builds `plan`; nothing runs until it is called.

    The timing cache is seeded from `shared_cache` when that file exists and written to
    `timing_cache` (Polygraphy merges into an existing file under a lock).
    """
    from polygraphy.backend.trt import CreateConfig, EngineFromNetwork, NetworkFromOnnxPath, SaveEngine

    network = NetworkFromOnnxPath(str(onnx_path), strongly_typed=strongly_typed_flag(recipe, has_typed_flag))
    config = CreateConfig(
        tf32=False,
        fp16=recipe.fp16_flag,
        profiles=[profile_for(shapes)],
        load_timing_cache=str(shared_cache) if shared_cache is not None and shared_cache.is_file() else None,
    )
    return SaveEngine(EngineFromNetwork(network, config, save_timing_cache=str(timing_cache)), str(plan))


def build_plan(onnx_path: Path, recipe: Recipe, shapes: ShapeRange, out: Path, shared_cache: Path | None) -> Path:
    """Run the loader chain: `out/model.plan` and `out/timing.cache`, the shared cache updated."""
    from polygraphy.exception import PolygraphyException
    from polygraphy.logger import G_LOGGER

    trt = _import_tensorrt()
    plan = out / PLAN
    has_flag = hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    save = build_loaders(onnx_path, recipe, shapes, plan, out / TIMING_CACHE, shared_cache, has_flag)
    try:
        with G_LOGGER.verbosity(G_LOGGER.WARNING):
            save()
    except PolygraphyException as exc:
        detail = " ".join(str(exc).split()) or "see the TensorRT log above"
        raise ElanDeployError(f"TensorRT could not build an engine from {onnx_path.name} for shapes {shapes}: {detail}") from None
    if shared_cache is not None and shared_cache.parent.is_dir() and (out / TIMING_CACHE).is_file():
        with atomic_path(shared_cache) as tmp:
            tmp.write_bytes((out / TIMING_CACHE).read_bytes())
    return plan


# --- run -------------------------------------------------------------------------------------


def deserialize(plan: Path) -> Any:
    """The ICudaEngine in `plan`; a corrupt plan, or one from another TensorRT/GPU, is a user error."""
    trt = _import_tensorrt()
    engine = trt.Runtime(_logger(trt)).deserialize_cuda_engine(plan.read_bytes())
    if engine is None:
        raise ElanDeployError(
            f"TensorRT could not load the engine {plan}: it is corrupt or was built by another TensorRT version or GPU; "
            f"delete that cache folder to rebuild it"
        )
    return engine


def _torch_dtype(trt: Any, engine: Any, name: str) -> Any:
    import torch

    return torch.from_numpy(np.empty(0, dtype=trt.nptype(engine.get_tensor_dtype(name)))).dtype


class TensorRTEngine:
    """One execution context on the current CUDA device; inputs copied in, outputs copied out."""

    def __init__(self, plan: Path, precision: Precision, shapes: ShapeRange, built: dict[str, str]) -> None:
        import torch

        trt = _import_tensorrt()
        self.shapes = shapes
        self.engine = deserialize(plan)
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise ElanDeployError(f"TensorRT could not create an execution context for {plan} (out of GPU memory?)")
        self.input_dtype = _torch_dtype(trt, self.engine, INPUT_NAME)
        self.output_dtype = _torch_dtype(trt, self.engine, OUTPUT_NAME)
        self.info = EngineInfo(
            runtime="tensorrt",
            runtime_version=trt.__version__,
            precision=precision,
            precision_used=built.get("precision_used", precision.value),
            device="GPU",
            details={"gpu": torch.cuda.get_device_name(), "recipe": built.get("recipe", "")},
        )

    def _set_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if not self.shapes.contains(shape) or not self.context.set_input_shape(INPUT_NAME, shape):
            got = "x".join(map(str, shape))
            raise ElanDeployError(f"this TensorRT engine was built for shapes {self.shapes}, got {got}; build one that covers it")
        return tuple(self.context.get_tensor_shape(OUTPUT_NAME))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch

        x = check_input(x)
        out_shape = self._set_shape(tuple(x.shape))
        stream = torch.cuda.current_stream()
        inp = torch.from_numpy(x).to("cuda", dtype=self.input_dtype, non_blocking=False)
        out = torch.empty(out_shape, dtype=self.output_dtype, device="cuda")
        self.context.set_tensor_address(INPUT_NAME, inp.data_ptr())
        self.context.set_tensor_address(OUTPUT_NAME, out.data_ptr())
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise ElanDeployError("TensorRT failed to run the engine (see the TensorRT log above)")
        stream.synchronize()
        return out.float().cpu().numpy()


class TensorRTRuntime(RuntimeDefaults):
    name = "tensorrt"
    extra = "tensorrt"
    precisions = (Precision.FP32, Precision.FP16, Precision.INT8)

    def __init__(self, timing_cache: Path | None = None) -> None:
        env = os.environ.get(TIMING_CACHE_ENV)
        self.timing_cache = timing_cache or (Path(env) if env else None)

    def check(self) -> None:
        _import_tensorrt()
        _require_cuda()

    def version(self) -> str:
        return _import_tensorrt().__version__

    def build(self, source: ModelSource, precision: Precision, shapes: ShapeRange, out: Path, options: BuildOptions) -> None:
        trt = _import_tensorrt()
        has_typed = hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
        recipe = recipe_for(precision, trt.__version__, has_typed)
        onnx_path = onnx_for(recipe, source, out)
        try:
            build_plan(onnx_path, recipe, shapes, out, self.timing_cache)
        finally:
            if onnx_path.parent == out:
                onnx_path.unlink(missing_ok=True)  # the typed FP16 ONNX was only an input
        info = {"precision_used": precision.value, "recipe": recipe.label}
        (out / BUILD_INFO).write_text(json.dumps(info, indent=2))

    def load(self, engine: Path, precision: Precision, shapes: ShapeRange, options: BuildOptions) -> TensorRTEngine:
        info_file = engine / BUILD_INFO
        built = json.loads(info_file.read_text()) if info_file.is_file() else {}
        return TensorRTEngine(engine / PLAN, precision, shapes, built)
