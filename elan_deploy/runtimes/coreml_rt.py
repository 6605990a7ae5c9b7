"""Core ML: the deployable torch module -> `torch.export` -> coremltools ML Program (.mlpackage).

coremltools no longer reads ONNX, so Core ML converts `ModelSource.deploy_module()` (same
checkpoint and export strategies as the ONNX file, so the same network). Conversion runs on
any OS; prediction needs macOS, so on Linux `build` works and `load` says why it cannot run.

Choices, and why:
- `torch.export`, not `torch.jit.trace`: tracing conversion of this network fails with
  coremltools 9 and numpy 2.
- Shapes: one static shape, or `EnumeratedShapes` {min, opt, max} when only the batch varies.
  coremltools 9 takes `EnumeratedShapes` for an ExportedProgram only if the program itself is
  dynamic in those axes. A dynamic batch exports fine (the example batch must be >= 2: torch
  specialises sizes 0 and 1). Dynamic H/W does not: DeployELAN's input check converts H
  and W to int outside TorchScript/ONNX tracing, which specialises them, and with that check
  patched out `torch.export` with symbolic N/H/W still had not finished after 15 minutes
  on a 2-core machine. The Upscaler tiles at a fixed size and DESIGN.md measured static
  engines as faster, so a range over H or W is refused with a one-line error, and the
  default shape (`DEFAULT_SHAPES`, used when `--shapes` is not given) is one Upscaler tile.
- Off macOS, conversion is the whole job: `build` writes the .mlpackage and `can_predict()`
  is False; `load` raises `PredictionNeedsMacOS` (a `RuntimeUnavailable`), so callers can
  tell "converted, runs on a Mac" from a missing package.
- fp16 keeps the attention logits (q·qᵀ MatMul) and the Softmax in fp32: ELAN's attention has
  no 1/sqrt(d) scale, its logits reach ~900 on natural images and ~2e8 on noise, past fp16's
  65504 (see `elan_deploy.calibration.fp16`). `keep_attention_fp32=False` turns that off.
- int8 is weight-only (W8, linear symmetric, per output channel) on the fp16 program: Core ML
  dequantises the weights at load time, so it saves size and bandwidth, and activations stay
  fp16. Weights under coremltools' default threshold (2048 elements, e.g. the 3-channel head
  conv) stay fp16.
- Input and output stay float32 so every engine has the same interface.
"""

from __future__ import annotations

import contextlib
import json
import logging
import platform
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from elan_deploy.errors import ElanDeployError, RuntimeUnavailable
from elan_deploy.runtimes.base import TILE_SHAPES, BuildOptions, EngineInfo, Precision, RuntimeDefaults, Shape, ShapeRange, check_input
from elan_deploy.runtimes.source import ModelSource

DEFAULT_SHAPES = TILE_SHAPES  # one Upscaler tile
PACKAGE = "model.mlpackage"
BUILD_INFO = "coreml-build.json"
INPUT_NAME = "lr"
OUTPUT_NAME = "sr"
# How many ops may sit between the logits MatMul and the Softmax (a scale Mul, a Cast, ...).
_ATTENTION_HOPS = 3
_PASS_THROUGH = frozenset({"mul", "real_div", "add", "cast", "reshape"})


@contextlib.contextmanager
def _quiet_coremltools() -> Iterator[None]:
    """Silence coremltools' import-time warnings (no native library off macOS, untested torch
    version): they are expected here and would bury the toolkit's own output."""
    logger = logging.getLogger("coremltools")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _import_coremltools() -> Any:
    try:
        with _quiet_coremltools():
            import coremltools as ct
    except ImportError:
        raise RuntimeUnavailable("Core ML conversion needs coremltools; pip install 'elan-deploy[coreml]'") from None
    return ct


def engine_shapes(shapes: ShapeRange) -> list[Shape]:
    """The shapes a Core ML engine accepts, the default (opt) first: one static shape, or
    {opt, min, max} when only the batch varies (see the module docstring for why)."""
    if shapes.is_static:
        return [shapes.opt]
    if shapes.min[1:] != shapes.max[1:]:
        raise ElanDeployError(
            f"Core ML engines take one H x W (only the batch may vary), got {shapes}; "
            f"pass a single shape such as {_shape_text(shapes.opt)} (the Upscaler tiles at a fixed size)"
        )
    return list(dict.fromkeys([shapes.opt, shapes.min, shapes.max]))


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


# --- fp16 with fp32 attention --------------------------------------------------------------


def _feeds_softmax(op: Any) -> bool:
    """True if `op`'s output reaches a softmax within a few pass-through ops."""
    frontier = list(op.outputs)
    for _ in range(_ATTENTION_HOPS):
        consumers = [child for var in frontier for child in var.child_ops]
        if any(child.op_type == "softmax" for child in consumers):
            return True
        frontier = [var for child in consumers if child.op_type in _PASS_THROUGH for var in child.outputs]
    return False


def run_in_fp16(op: Any) -> bool:
    """op_selector for `FP16ComputePrecision`: everything but the softmax and its logits MatMul."""
    if op.op_type == "softmax":
        return False
    return not (op.op_type == "matmul" and _feeds_softmax(op))


def compute_precision(ct: Any, precision: Precision, keep_attention_fp32: bool) -> Any:
    """The `compute_precision` argument of `ct.convert` for a toolkit precision."""
    if precision is Precision.FP32:
        return ct.precision.FLOAT32
    if keep_attention_fp32:
        return ct.transform.FP16ComputePrecision(op_selector=run_in_fp16)
    return ct.precision.FLOAT16


def precision_label(precision: Precision, keep_attention_fp32: bool) -> str:
    """What the program computes in, as reported in EngineInfo.precision_used."""
    if precision is Precision.FP32:
        return "fp32"
    base = "fp16+fp32-attention" if keep_attention_fp32 else "fp16"
    return f"int8-weights+{base}" if precision is Precision.INT8 else base


# --- conversion ----------------------------------------------------------------------------


def export_program(source: ModelSource, shapes: list[Shape]) -> Any:
    """`torch.export` of the deployable module, dynamic in the batch only if several shapes
    are asked for, decomposed to ATEN ops (coremltools converts only ATEN/EDGE dialects)."""
    import torch

    batches = [shape[0] for shape in shapes]
    lo, hi = min(batches), max(batches)
    # torch.export specialises an example size of 1, so a dynamic batch needs an example >= 2.
    example_batch = min(max(shapes[0][0], 2), hi) if hi > lo else shapes[0][0]
    example = torch.rand((example_batch, *shapes[0][1:])) * 255.0
    dynamic = ({0: torch.export.Dim("batch", min=lo, max=hi)},) if hi > lo else None
    with torch.no_grad():
        exported = torch.export.export(source.deploy_module(), (example,), dynamic_shapes=dynamic)
    return exported.run_decompositions({})


def input_type(ct: Any, shapes: list[Shape]) -> Any:
    """The `lr` input: float32, one fixed shape or enumerated shapes with opt as default."""
    if len(shapes) == 1:
        return ct.TensorType(name=INPUT_NAME, shape=shapes[0], dtype=np.float32)
    enumerated = ct.EnumeratedShapes(shapes=[list(s) for s in shapes], default=list(shapes[0]))
    return ct.TensorType(name=INPUT_NAME, shape=enumerated, dtype=np.float32)


def convert(source: ModelSource, precision: Precision, shapes: list[Shape], keep_attention_fp32: bool = True) -> Any:
    """An ML Program (an unloaded `MLModel`) for fp32 or fp16; int8 starts from the fp16 one."""
    ct = _import_coremltools()
    float_precision = Precision.FP32 if precision is Precision.FP32 else Precision.FP16
    with warnings.catch_warnings():  # torch 2.9's pytree deprecation, raised inside torch.export/coremltools
        warnings.filterwarnings("ignore", message=".*LeafSpec", category=FutureWarning)
        program = export_program(source, shapes)
        return _convert_program(ct, program, float_precision, shapes, keep_attention_fp32)


def _convert_program(ct: Any, program: Any, float_precision: Precision, shapes: list[Shape], keep_attention_fp32: bool) -> Any:
    return ct.convert(
        program,
        inputs=[input_type(ct, shapes)],
        outputs=[ct.TensorType(name=OUTPUT_NAME, dtype=np.float32)],
        convert_to="mlprogram",
        compute_precision=compute_precision(ct, float_precision, keep_attention_fp32),
        minimum_deployment_target=ct.target.macOS13,  # = iOS16: ML Program with fp16 and constexpr weights
        skip_model_load=True,  # loading needs the macOS Core ML framework
    )


def quantize_weights_int8(mlmodel: Any) -> Any:
    """Weight-only linear symmetric int8 (per channel); activations keep the model's precision."""
    import coremltools.optimize.coreml as cto

    config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8"))
    return cto.linear_quantize_weights(mlmodel, config=config)


# --- program inspection (tests, `info`) ---------------------------------------------------


def load_program_spec(mlpackage: Path) -> Any:
    """The protobuf spec of a saved .mlpackage; reading it needs no macOS."""
    ct = _import_coremltools()
    return ct.utils.load_spec(str(mlpackage))


def _walk_operations(block: Any) -> Iterator[Any]:
    for op in block.operations:
        yield op
        for nested in op.blocks:
            yield from _walk_operations(nested)


def program_operations(spec: Any) -> Iterator[Any]:
    """Every MIL operation of every function of an ML Program spec, nested blocks included."""
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            yield from _walk_operations(block)


def _tensor_rank(value_type: Any) -> int:
    if not value_type.HasField("tensorType"):
        return 0
    tensor = value_type.tensorType
    return max(int(tensor.rank), len(tensor.dimensions))


def program_max_rank(mlpackage: Path) -> int:
    """Highest tensor rank in the program (Core ML rejects tensors above rank 5)."""
    spec = load_program_spec(mlpackage)
    ranks = [_tensor_rank(arg.type) for function in spec.mlProgram.functions.values() for arg in function.inputs]
    ranks += [_tensor_rank(out.type) for op in program_operations(spec) for out in op.outputs]
    return max(ranks, default=0)


def op_output_dtypes(mlpackage: Path, op_type: str) -> set[str]:
    """Data type names (e.g. 'FLOAT32') of the outputs of every `op_type` op in the program."""
    from coremltools.proto import MIL_pb2

    spec = load_program_spec(mlpackage)
    return {
        MIL_pb2.DataType.Name(out.type.tensorType.dataType)
        for op in program_operations(spec)
        if op.type == op_type
        for out in op.outputs
        if out.type.HasField("tensorType")
    }


# --- engine --------------------------------------------------------------------------------


class PredictionNeedsMacOS(RuntimeUnavailable):
    """The .mlpackage was converted, but Core ML prediction needs macOS: a note, not a failure,
    for a command whose job is conversion (`build`), which reports the converted engine's `info`."""

    def __init__(self, message: str, info: EngineInfo) -> None:
        super().__init__(message)
        self.info = info


def can_predict() -> bool:
    """True where Core ML can run a converted model (macOS); conversion works everywhere."""
    return platform.system() == "Darwin"


class CoreMLEngine:
    """`MLModel.predict` on all compute units (CPU, GPU, Neural Engine; Core ML picks)."""

    def __init__(self, package: Path, precision: Precision, shapes: list[Shape], used: str) -> None:
        ct = _import_coremltools()
        self.shapes = shapes
        self.model = ct.models.MLModel(str(package), compute_units=ct.ComputeUnit.ALL)
        self.info = EngineInfo(
            runtime="coreml",
            runtime_version=ct.__version__,
            precision=precision,
            precision_used=used,
            device="ALL (CPU/GPU/ANE)",
            details={"mac": platform.mac_ver()[0], "machine": platform.machine()},
        )

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = check_input(x)
        if tuple(x.shape) not in self.shapes:
            built = ", ".join(map(_shape_text, self.shapes))
            raise ElanDeployError(f"this Core ML engine was built for {built}, got {_shape_text(x.shape)}; build one for that shape")
        return np.asarray(self.model.predict({INPUT_NAME: x})[OUTPUT_NAME], dtype=np.float32)


class CoreMLRuntime(RuntimeDefaults):
    name = "coreml"
    extra = "coreml"
    precisions = (Precision.FP32, Precision.FP16, Precision.INT8)
    default_shapes = DEFAULT_SHAPES  # this module's: one static tile, what Core ML runs fastest

    def __init__(self, keep_attention_fp32: bool = True) -> None:
        self.keep_attention_fp32 = keep_attention_fp32

    def check(self) -> None:
        _import_coremltools()

    def can_predict(self) -> bool:
        """False off macOS: `build` converts, `load` raises PredictionNeedsMacOS."""
        return can_predict()

    def version(self) -> str:
        """coremltools version; the attention option is appended when it is off, because the
        version is part of the engine-cache key and the option changes the program."""
        version = _import_coremltools().__version__
        return version if self.keep_attention_fp32 else f"{version}+fp16-attention"

    def build(self, source: ModelSource, precision: Precision, shapes: ShapeRange, out: Path, options: BuildOptions) -> None:
        accepted = engine_shapes(shapes)
        mlmodel = convert(source, precision, accepted, self.keep_attention_fp32)
        if precision is Precision.INT8:
            mlmodel = quantize_weights_int8(mlmodel)
        mlmodel.save(str(out / PACKAGE))
        info = {"shapes": [list(s) for s in accepted], "precision_used": precision_label(precision, self.keep_attention_fp32)}
        (out / BUILD_INFO).write_text(json.dumps(info, indent=2))

    def converted_info(self, engine: Path, precision: Precision) -> EngineInfo:
        """What a built engine folder holds, read from its files: works off macOS, where `load`
        cannot (`build` reports the precision used from this)."""
        info = json.loads((engine / BUILD_INFO).read_text())
        return EngineInfo(
            runtime=self.name,
            runtime_version=self.version(),
            precision=precision,
            precision_used=info["precision_used"],
            device="ALL (CPU/GPU/ANE), macOS only",
            details={"shapes": ", ".join(_shape_text(s) for s in info["shapes"]), "package": str(engine / PACKAGE)},
        )

    def load(self, engine: Path, precision: Precision, shapes: ShapeRange, options: BuildOptions) -> CoreMLEngine:
        package = engine / PACKAGE
        if not can_predict():
            message = f"Core ML prediction needs macOS; the .mlpackage was converted at {package}"
            raise PredictionNeedsMacOS(message, self.converted_info(engine, precision))
        info = json.loads((engine / BUILD_INFO).read_text())
        return CoreMLEngine(package, precision, [tuple(s) for s in info["shapes"]], info["precision_used"])
