"""`EngineLoader`: the one place an engine is built and opened.

Like Polygraphy's loaders, it is a small value that knows how to make the thing and makes it
when called: commands, bench workers, Ray actors, `diff` and `serve` hold a loader and call
`build()` (engine files in the cache, for a runtime that has them) or `open()` (an `Engine`).
It is frozen and picklable, so a bench worker or a Ray actor receives the same loader the
driver built with and finds the driver's engine in the shared cache instead of building again.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from elan_deploy.console import StepProgress
from elan_deploy.errors import ElanDeployError, RuntimeUnavailable
from elan_deploy.runtimes.base import BuildOptions, Engine, Precision, Runtime, ShapeRange
from elan_deploy.runtimes.cache import CacheKey, EngineCache
from elan_deploy.runtimes.source import ModelSource
from elan_deploy.scratch import cache_root as default_cache_root

_RUNTIMES = {
    "torch": ("elan_deploy.runtimes.torch_rt", "TorchRuntime"),
    "torch-compile": ("elan_deploy.runtimes.torch_rt", "TorchCompileRuntime"),
    "onnxruntime": ("elan_deploy.runtimes.onnxruntime_rt", "OnnxRuntimeRuntime"),
    "openvino": ("elan_deploy.runtimes.openvino_rt", "OpenVINORuntime"),
    "tensorrt": ("elan_deploy.runtimes.tensorrt_rt", "TensorRTRuntime"),
    "coreml": ("elan_deploy.runtimes.coreml_rt", "CoreMLRuntime"),
    "ncnn": ("elan_deploy.runtimes.ncnn_rt", "NcnnRuntime"),
}
RUNTIME_NAMES = tuple(_RUNTIMES)
RUNTIMES_FROM_ONNX = ("onnxruntime", "openvino", "tensorrt")  # built from the exported ONNX file (the others convert the torch module)


class _PhaseSteps:
    """A build's phase reports ("calibrate (entropy)", "probe 3/62 body.0.attn_qk") as steps under
    the build step: a new phase starts a step, a counted phase ("NAME i/n ...") moves its count,
    so a log gets a line per phase and a heartbeat with the count, not a line per probe."""

    _COUNTED = re.compile(r"^(?P<name>.+?) (?P<done>\d+)/(?P<total>\d+)(?: .*)?$")

    def __init__(self, step: str, progress: StepProgress) -> None:
        self.step, self.progress, self.name = step, progress, None

    def __call__(self, phase: str) -> None:
        counted = self._COUNTED.match(phase)
        name = counted["name"] if counted else phase
        if name != self.name:
            self.name = name
            self.progress.start(f"{self.step}: {name}", int(counted["total"]) if counted else None)
        if counted:
            self.progress.update(completed=int(counted["done"]))


def get_runtime(name: str) -> Runtime:
    """The runtime called `name`, imported on first use (optional runtimes stay optional)."""
    if name not in _RUNTIMES:
        raise ElanDeployError(f"unknown runtime '{name}'; choose one of {', '.join(RUNTIME_NAMES)}")
    module_name, class_name = _RUNTIMES[name]
    return getattr(importlib.import_module(module_name), class_name)()


def runtime_precisions(name: str) -> tuple[Precision, ...]:
    """The precisions a runtime builds (known without its package installed)."""
    return get_runtime(name).precisions


def is_available(runtime_name: str) -> str | None:
    """None when the runtime can run here, else the reason (with its install hint)."""
    try:
        get_runtime(runtime_name).check()
    except RuntimeUnavailable as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class EngineLoader:
    """One engine, described: model source (checkpoint, export form, guard), runtime, precision,
    shapes, threads and cache root; `build()` and `open()` make it.

    `shapes=None` takes the runtime's own default; `cache_root=None` the user's cache
    (`$ELAN_DEPLOY_CACHE`), where engines go to `engines/`. Threads are a load-time setting, so
    one cached engine serves every thread count.
    """

    source: ModelSource
    runtime: str
    precision: Precision | str
    shapes: ShapeRange | None = None
    threads: int | None = None
    cache_root: Path | None = None

    def backend(self) -> Runtime:
        """The runtime, checked: a supported precision and its package importable here."""
        runtime = get_runtime(self.runtime)
        precision = Precision.parse(self.precision)
        if precision not in runtime.precisions:
            supported = ", ".join(p.value for p in runtime.precisions)
            raise ElanDeployError(f"runtime '{self.runtime}' does not support {precision.value}; choose one of {supported}")
        runtime.check()
        return runtime

    @property
    def needs_build(self) -> bool:
        """False for runtimes that run the checkpoint directly (torch, torch-compile)."""
        return get_runtime(self.runtime).needs_build

    @property
    def engine_shapes(self) -> ShapeRange:
        return self.shapes or get_runtime(self.runtime).default_shapes

    @property
    def options(self) -> BuildOptions:
        return BuildOptions(threads=self.threads)

    @property
    def cache(self) -> EngineCache:
        return EngineCache((self.cache_root or default_cache_root()) / "engines")

    def with_threads(self, threads: int | None) -> EngineLoader:
        return replace(self, threads=threads)

    def _cache_key(self, runtime: Runtime) -> CacheKey:
        return CacheKey(
            fingerprint=self.source.fingerprint(), precision=Precision.parse(self.precision).value, shapes=str(self.engine_shapes),
            runtime=runtime.name, runtime_version=runtime.version(), options=self.options.cache_key(),
        )

    def build(self, on_phase: Callable[[str], None] | None = None) -> Path:
        """The engine folder in the cache, built unless an intact entry for this exact network exists;
        `on_phase` hears what a build does (INT8's calibration and searches)."""
        runtime = self.backend()
        if not runtime.needs_build:
            raise ElanDeployError(f"runtime '{self.runtime}' runs the checkpoint directly; there is no engine to build")
        precision, shapes, options = Precision.parse(self.precision), self.engine_shapes, replace(self.options, on_phase=on_phase)
        key = self._cache_key(runtime)
        cache = self.cache
        return cache.lookup(key, self.source.onnx_sha256()) or cache.store(
            key, lambda folder: runtime.build(self.source, precision, shapes, folder, options), source_onnx=self.source.onnx_sha256
        )

    def is_built(self) -> bool:
        """Whether the cache holds an intact engine for these settings (True where there is nothing to build).

        A first build can take minutes (INT8 calibrates on T91), so a command shows it as a step.
        The source ONNX is not exported to answer (a checkpoint's first export calibrates its
        ranges, also minutes); `open()` still checks the entry against it.
        """
        runtime = self.backend()
        return not runtime.needs_build or self.cache.lookup(self._cache_key(runtime)) is not None

    def start_first_use(self, progress: StepProgress) -> Callable[[str], None] | None:
        """Show a first use's slow work on `progress`, each part as its own step.

        A checkpoint's range calibration runs now (its step counts the T91 images). An engine
        not in the cache starts the build step, which the next `build()` or `open()` runs; pass
        them the returned callback and the build's phases become steps of their own ("...:
        probe", counting its 62 layer groups). With everything cached nothing is shown and None
        is returned.
        """
        self.source.range_guard(progress)
        if self.is_built():
            return None
        step = f"build {self.runtime} {Precision.parse(self.precision).value} engine (first use of these settings; cached after)"
        progress.start(step, None)
        return _PhaseSteps(step, progress)

    def open(self, on_phase: Callable[[str], None] | None = None) -> Engine:
        """An engine ready to call; builds it first unless the cache has it (`on_phase`: as for `build`)."""
        runtime = self.backend()
        precision = Precision.parse(self.precision)
        if not runtime.needs_build:
            return runtime.open(self.source, precision, self.options)
        return self.load(self.build(on_phase))

    def load(self, folder: Path) -> Engine:
        """The engine in a folder `build()` returned (no second look into the cache)."""
        engine = self.backend().load(folder, Precision.parse(self.precision), self.engine_shapes, self.options)
        engine.info.details.setdefault("engine", str(folder))
        engine.info.details.setdefault("shapes", str(self.engine_shapes))
        return engine

    def __call__(self) -> Engine:
        """Loaders are called like Polygraphy's: `EngineLoader(...)()` opens the engine."""
        return self.open()
