"""Polygraphy runners for what Polygraphy does not ship: OpenVINO, and any elan-deploy engine.

`OpenVINORunner` implements Polygraphy's `BaseRunner` on a compiled OpenVINO model, and
`CompileOpenVINOModel` is its loader in Polygraphy's style (a small callable that the runner
invokes on activation), so both the `elan-deploy diff` Comparator and the plain
`polygraphy run --openvino` (through the plugin in `polygraphy_plugin.py`) use the same code.
`EngineRunner` wraps any `elan_deploy` engine (PyTorch, TensorRT, Core ML, ncnn) for the Comparator.

Nothing here imports OpenVINO at module import: Polygraphy imports the plugin on every
`polygraphy run`, with or without OpenVINO installed.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from polygraphy import util
from polygraphy.backend.base import BaseLoader, BaseRunner
from polygraphy.common import TensorMetadata
from polygraphy.datatype import DataType

from elan_deploy.runtimes.openvino_rt import FLOAT_PRECISION_HINTS as OPENVINO_HINTS
from elan_deploy.runtimes.openvino_rt import import_openvino



class CompileOpenVINOModel(BaseLoader):
    """Loader: an ONNX file, serialized ONNX bytes or an OpenVINO IR -> an `ov.CompiledModel` on CPU.

    `precision` pins OpenVINO's inference precision (on CPUs with bf16/AMX it would otherwise
    pick bf16 silently); `outputs` makes extra tensors, by name, outputs of the model (the
    layer-by-layer diff marks every tensor this way); `input_shape` reshapes the model's input.
    """

    def __init__(
        self,
        model: str | Path | bytes | Callable[[], Any],
        precision: str | None = "fp32",
        threads: int | None = None,
        outputs: Sequence[str] | None = None,
        device: str = "CPU",
        input_shape: Sequence[int] | None = None,
    ) -> None:
        if precision is not None and precision not in OPENVINO_HINTS:
            raise ValueError(f"unknown OpenVINO precision '{precision}'; choose one of {', '.join(OPENVINO_HINTS)}")
        self._model = model
        self.precision = precision
        self.threads = threads
        self.outputs = list(outputs) if outputs else []
        self.device = device
        self.input_shape = tuple(input_shape) if input_shape is not None else None

    def call_impl(self) -> Any:
        ov = import_openvino()
        core = ov.Core()
        model, _ = util.invoke_if_callable(self._model)
        if isinstance(model, (bytes, bytearray)):
            ov_model = core.read_model(model=bytes(model))
        else:
            ov_model = core.read_model(str(model))
        if self.input_shape is not None:  # e.g. one image through an IR built for a batch
            ov_model.reshape({ov_model.input(0): ov.PartialShape(list(self.input_shape))})
        if self.outputs:
            ov_model.add_outputs(self.outputs)
        config: dict[str, object] = {"PERFORMANCE_HINT": "LATENCY"}
        if self.precision is not None:
            config["INFERENCE_PRECISION_HINT"] = OPENVINO_HINTS[self.precision]
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = self.threads
        return core.compile_model(ov_model, self.device, config)


def tensor_names(model: Any) -> set[str]:
    """Every tensor name an OpenVINO model carries (ONNX tensor names survive conversion)."""
    names: set[str] = set()
    for op in model.get_ordered_ops():
        for output in op.outputs():
            names |= output.get_names()
    return names


class OpenVINORunner(BaseRunner):
    """Runs inference with an OpenVINO compiled model (or a loader that returns one)."""

    def __init__(self, compiled_model: Any, name: str | None = None, output_names: Sequence[str] | None = None) -> None:
        """
        Args:
            compiled_model: an `openvino.CompiledModel`, or a callable (e.g. `CompileOpenVINOModel`) returning one.
            output_names: names to report outputs under when a tensor carries several names;
                    by default each output's first name.
        """
        super().__init__(name=name, prefix="openvino-runner")
        self._compiled_model = compiled_model
        self._wanted = set(output_names or ())

    @util.check_called_by("activate")
    def activate_impl(self) -> None:
        self.compiled, _ = util.invoke_if_callable(self._compiled_model)
        self.request = self.compiled.create_infer_request()
        self._outputs = []
        for port in self.compiled.outputs:
            names = sorted(port.get_names() & self._wanted) or [port.get_any_name()]
            self._outputs.append((port, names))

    @util.check_called_by("get_input_metadata")
    def get_input_metadata_impl(self) -> TensorMetadata:
        meta = TensorMetadata()
        for port in self.compiled.inputs:
            shape = [dim.get_length() if dim.is_static else None for dim in port.get_partial_shape()]
            meta.add(port.get_any_name(), dtype=DataType.from_dtype(np.dtype(port.get_element_type().to_dtype())), shape=shape)
        return meta

    @util.check_called_by("infer")
    def infer_impl(self, feed_dict: dict) -> OrderedDict:
        feed = {name: np.ascontiguousarray(util.array.to_numpy(value)) for name, value in feed_dict.items()}
        start = time.perf_counter()
        self.request.infer(feed)
        end = time.perf_counter()
        outputs: OrderedDict = OrderedDict()
        for port, names in self._outputs:
            value = np.array(self.request.get_tensor(port).data)  # a copy: the request reuses its buffers
            for name in names:
                outputs[name] = value
        self.inference_time = end - start
        return outputs

    @util.check_called_by("deactivate")
    def deactivate_impl(self) -> None:
        del self.request
        del self.compiled
        del self._outputs


class EngineRunner(BaseRunner):
    """Any elan-deploy `Engine` (N,3,H,W float32 -> N,3,sH,sW) as a Polygraphy runner."""

    def __init__(
        self, engine: Any, shape: Sequence[int], input_name: str = "lr", output_name: str = "sr", name: str | None = None
    ) -> None:
        super().__init__(name=name, prefix="elan-engine-runner")
        self._engine = engine
        self.shape = tuple(shape)
        self.input_name = input_name
        self.output_name = output_name

    @util.check_called_by("activate")
    def activate_impl(self) -> None:
        self.engine, _ = util.invoke_if_callable(self._engine)

    @util.check_called_by("get_input_metadata")
    def get_input_metadata_impl(self) -> TensorMetadata:
        return TensorMetadata().add(self.input_name, dtype=DataType.FLOAT32, shape=self.shape)

    @util.check_called_by("infer")
    def infer_impl(self, feed_dict: dict) -> OrderedDict:
        x = util.array.to_numpy(feed_dict[self.input_name])
        start = time.perf_counter()
        y = self.engine(x)
        self.inference_time = time.perf_counter() - start
        return OrderedDict([(self.output_name, np.asarray(y))])

    @util.check_called_by("deactivate")
    def deactivate_impl(self) -> None:
        del self.engine
