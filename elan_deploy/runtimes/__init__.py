"""Runtimes behind one small interface (`base.Runtime`), and `EngineLoader`, which builds (cached) and opens.

Optional runtimes are imported lazily: a missing package surfaces as `RuntimeUnavailable`
naming the extra to install, never as an ImportError at startup.
"""

from __future__ import annotations

from elan_deploy.runtimes.base import (
    DEFAULT_SHAPES,
    BuildOptions,
    Engine,
    EngineInfo,
    Precision,
    Runtime,
    ShapeRange,
)
from elan_deploy.runtimes.cache import EngineCache
from elan_deploy.runtimes.loader import (
    RUNTIME_NAMES,
    RUNTIMES_FROM_ONNX,
    EngineLoader,
    get_runtime,
    is_available,
    runtime_precisions,
)
from elan_deploy.runtimes.source import ModelSource

__all__ = [
    "DEFAULT_SHAPES", "RUNTIME_NAMES", "RUNTIMES_FROM_ONNX", "BuildOptions", "Engine", "EngineCache", "EngineInfo", "EngineLoader", "ModelSource",
    "Precision", "Runtime", "ShapeRange", "get_runtime", "is_available", "runtime_precisions",
]
