"""Runtimes behind one small interface, and `open_engine`, which builds (cached) and loads.

Optional runtimes are imported lazily: a missing package surfaces as `RuntimeUnavailable`
naming the extra to install, never as an ImportError at startup.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from elan_deploy.errors import ElanDeployError, RuntimeUnavailable
from elan_deploy.runtimes.base import (
    DEFAULT_SHAPES,
    BuildOptions,
    Engine,
    EngineInfo,
    Precision,
    ShapeRange,
)
from elan_deploy.runtimes.cache import CacheKey, EngineCache
from elan_deploy.runtimes.source import ModelSource
from elan_deploy.scratch import process_scratch_dir

_RUNTIMES = {
    "torch": ("elan_deploy.runtimes.torch_rt", "TorchRuntime"),
    "torch-compile": ("elan_deploy.runtimes.torch_rt", "TorchCompileRuntime"),
    "onnxruntime": ("elan_deploy.runtimes.onnxruntime_rt", "OnnxRuntimeRuntime"),
    "openvino": ("elan_deploy.runtimes.openvino_rt", "OpenVINORuntime"),
    "tensorrt": ("elan_deploy.runtimes.tensorrt_rt", "TensorRTRuntime"),
    "coreml": ("elan_deploy.runtimes.coreml_rt", "CoreMLRuntime"),
}
RUNTIME_NAMES = tuple(_RUNTIMES)

__all__ = [
    "DEFAULT_SHAPES", "RUNTIME_NAMES", "BuildOptions", "Engine", "EngineCache", "EngineInfo", "ModelSource",
    "Precision", "ShapeRange", "build_engine", "default_shapes_for", "get_runtime", "is_available", "needs_build", "open_engine",
]


def get_runtime(name: str):
    if name not in _RUNTIMES:
        raise ElanDeployError(f"unknown runtime '{name}'; choose one of {', '.join(RUNTIME_NAMES)}")
    module_name, class_name = _RUNTIMES[name]
    return getattr(importlib.import_module(module_name), class_name)()


def _checked(runtime_name: str, precision: Precision | str):
    runtime = get_runtime(runtime_name)
    precision = Precision.parse(precision)
    if precision not in runtime.precisions:
        supported = ", ".join(p.value for p in runtime.precisions)
        raise ElanDeployError(f"runtime '{runtime_name}' does not support {precision.value}; choose one of {supported}")
    runtime.check()
    return runtime, precision


def build_engine(
    source: ModelSource,
    runtime_name: str,
    precision: Precision | str,
    shapes: ShapeRange = DEFAULT_SHAPES,
    options: BuildOptions = BuildOptions(),
    cache: EngineCache | None = None,
) -> Path:
    """Build (or find in the cache) an engine folder and return its path.

    Without a cache the engine goes to a scratch folder removed when the process exits.
    """
    runtime, precision = _checked(runtime_name, precision)
    if not getattr(runtime, "needs_build", True):
        raise ElanDeployError(f"runtime '{runtime_name}' runs the checkpoint directly; there is no engine to build")
    cache = cache or EngineCache(process_scratch_dir() / "engines")
    key = CacheKey(
        fingerprint=source.fingerprint(), precision=precision.value, shapes=str(shapes), runtime=runtime.name,
        runtime_version=runtime.version(), options=options.cache_key(),
    )
    return cache.lookup(key, source.onnx_sha256()) or cache.store(
        key, lambda folder: runtime.build(source, precision, shapes, folder, options), source_onnx=source.onnx_sha256
    )


def open_engine(
    source: ModelSource,
    runtime_name: str,
    precision: Precision | str,
    shapes: ShapeRange = DEFAULT_SHAPES,
    options: BuildOptions = BuildOptions(),
    cache: EngineCache | None = None,
) -> Engine:
    """An engine ready to call; builds it first unless the cache has it."""
    runtime, precision = _checked(runtime_name, precision)
    if not getattr(runtime, "needs_build", True):
        return runtime.open(source, precision, options)
    folder = build_engine(source, runtime_name, precision, shapes, options, cache)
    engine = runtime.load(folder, precision, shapes, options)
    engine.info.details.setdefault("engine", str(folder))
    engine.info.details.setdefault("shapes", str(shapes))
    return engine


def default_shapes_for(runtime_name: str) -> ShapeRange:
    """The engine shapes a runtime builds when none are given: its own (Core ML: one tile), else DEFAULT_SHAPES."""
    return getattr(get_runtime(runtime_name), "default_shapes", None) or DEFAULT_SHAPES


def needs_build(runtime_name: str) -> bool:
    """False for runtimes that run the checkpoint directly (torch, torch-compile)."""
    return getattr(get_runtime(runtime_name), "needs_build", True)


def is_available(runtime_name: str) -> str | None:
    """None when the runtime can run here, else the reason (with its install hint)."""
    try:
        get_runtime(runtime_name).check()
    except RuntimeUnavailable as exc:
        return str(exc)
    return None
