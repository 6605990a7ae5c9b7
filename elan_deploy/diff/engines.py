"""From `runtime:precision` specs to built engines and Polygraphy runners.

Engines are built (or found) through the engine cache by the same `EngineLoader` as `build`,
`upscale` and `bench` use, so the diff checks the engines users run: ONNX Runtime on the exported
FP32 ONNX, the typed FP16 ONNX or the Q/DQ INT8 ONNX the loader makes; OpenVINO on its IR (NNCF
INT8 for `openvino:int8`). ONNX Runtime sessions and OpenVINO compiled models are handed to
Polygraphy's `OnnxrtRunner` and our `OpenVINORunner`; every other runtime (PyTorch, TensorRT,
Core ML, ncnn) runs through `EngineRunner`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from elan_deploy.diff.spec import EngineSpec
from elan_deploy.errors import ElanDeployError, WorkFailed
from elan_deploy.runtimes import RUNTIMES_FROM_ONNX, EngineLoader, ModelSource, ShapeRange

GRAPH_RUNTIMES = ("onnxruntime", "openvino")  # runtimes whose engine is an ONNX/IR graph Polygraphy can read tensor by tensor
DEFAULT_INPUT, DEFAULT_OUTPUT = "lr", "sr"  # the names export.onnx_export gives the graph


@dataclass
class PreparedEngine:
    """An engine whose files are built: the cache folder (None for runtimes without a build)."""

    spec: EngineSpec
    folder: Path | None
    info: dict[str, Any] = field(default_factory=dict)  # filled in when the engine is opened

    @property
    def label(self) -> str:
        return self.spec.label


@dataclass
class EngineSet:
    """Everything needed to open the engines of one diff."""

    source: ModelSource
    shapes: ShapeRange
    threads: int | None
    cache_root: Path

    def loader(self, spec: EngineSpec) -> EngineLoader:
        return EngineLoader(self.source, spec.runtime, spec.precision, self.shapes, self.threads, self.cache_root)

    def io_names(self, specs: list[EngineSpec]) -> tuple[str, str]:
        """The graph's input and output names (from the ONNX when an engine reads it)."""
        if not any(s.runtime in RUNTIMES_FROM_ONNX for s in specs):
            return DEFAULT_INPUT, DEFAULT_OUTPUT
        import onnx

        graph = onnx.load(str(self.source.onnx_path()), load_external_data=False).graph
        initializers = {t.name for t in graph.initializer}
        inputs = [i.name for i in graph.input if i.name not in initializers]
        return inputs[0], graph.output[0].name

    def prepare(self, spec: EngineSpec) -> PreparedEngine:
        """Build (or find in the cache) the engine's files; INT8 calibrates here on first use."""
        loader = self.loader(spec)
        loader.backend()  # a missing runtime fails here, before any other engine is built
        return PreparedEngine(spec, loader.build() if loader.needs_build else None)

    def opener(self, prepared: PreparedEngine) -> Callable[[], Any]:
        """A Polygraphy-style loader: opens the engine from the cache and records its EngineInfo."""
        loader = self.loader(prepared.spec)

        def open_it() -> Any:
            engine = loader.open()
            info = engine.info
            prepared.info.update(
                runtime_version=info.runtime_version, precision_used=info.precision_used, threads=info.threads, device=info.device,
            )
            return engine

        return open_it

    def runner(self, prepared: PreparedEngine, input_name: str, output_name: str):
        """The Polygraphy runner for one engine, named by its spec."""
        from polygraphy.backend.onnxrt import OnnxrtRunner

        from elan_deploy.diff.runners import EngineRunner, OpenVINORunner

        open_it = self.opener(prepared)
        if prepared.spec.runtime == "onnxruntime":
            return OnnxrtRunner(lambda: open_it().session, name=prepared.label)
        if prepared.spec.runtime == "openvino":
            return OpenVINORunner(lambda: open_it().compiled, name=prepared.label)
        return EngineRunner(open_it, self.shapes.opt, input_name, output_name, name=prepared.label)


@contextlib.contextmanager
def polygraphy_logging(verbose: bool = False) -> Iterator[None]:
    """Polygraphy's log off (our tables say it), or at INFO with `verbose`; its fatal errors become ours.

    Polygraphy reports a fatal problem by logging it at CRITICAL and raising
    `PolygraphyException`: that becomes `WorkFailed` with Polygraphy's message.
    """
    from polygraphy.exception import PolygraphyException
    from polygraphy.logger import G_LOGGER

    G_LOGGER.colors = False  # no 'colored' module warning, and no escape codes in logs
    old = G_LOGGER.module_severity
    G_LOGGER.module_severity = G_LOGGER.INFO if verbose else G_LOGGER.CRITICAL + 1
    try:
        yield
    except PolygraphyException as exc:
        message = " ".join(str(exc).split()) or "Polygraphy failed (rerun with --verbose for its log)"
        raise WorkFailed(f"Polygraphy: {message}") from None
    finally:
        G_LOGGER.module_severity = old


def check_layer_reference(spec: EngineSpec) -> None:
    if spec.runtime not in GRAPH_RUNTIMES:
        raise ElanDeployError(
            f"--layers compares ONNX graphs tensor by tensor; the reference '{spec}' does not run one: "
            f"put an onnxruntime or openvino engine first"
        )
