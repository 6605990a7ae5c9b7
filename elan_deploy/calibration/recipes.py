"""Explicit Q/DQ INT8 for ELAN with ONNX Runtime's quantizer, under TensorRT's rules.

The file this writes runs unchanged on TensorRT (explicit quantization), ONNX Runtime and
OpenVINO, so it follows what TensorRT accepts for explicit INT8:
- INT8 only, symmetric, zero point 0 (`ActivationSymmetric`, `WeightSymmetric`, QInt8);
- weights per output channel (axis 0 of Conv weights, the MatMul B operand has none: ELAN's
  MatMuls multiply two activations), activations per tensor (one scalar scale);
- Q/DQ only on the inputs of the ops that have INT8 kernels (Conv, MatMul): data movement
  (Reshape/Transpose/Slice/Split/Concat), Softmax and the residual Adds stay float, and the
  runtimes propagate the Q/DQ through data movement themselves where that pays.

Calibration runs once per (model, data, method) and is kept as ORT's JSON calibration cache,
so the mixed-precision search re-quantizes with other `nodes_to_exclude` without re-running
the model on the patches. Patches come in several sizes (see `data`), and ORT's histogram
calibrators stack each batch's tensors, so they are fed one shape group at a time: the
histograms are merged across calls.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx

from elan_deploy.calibration.data import to_nchw
from elan_deploy.choices import Choice
from elan_deploy.errors import ElanDeployError
from elan_deploy.fileio import atomic_path
from elan_deploy.geometry import MULTIPLE
from elan_deploy.scratch import temporary_dir

QUANTIZED_OP_TYPES: tuple[str, ...] = ("Conv", "MatMul")
RECIPE_VERSION = 2  # bump when a change here changes the bytes of the INT8 file
_GROUP = 8  # patches per calibrator call: bounds the memory of ORT's collected tensors


class Method(Choice):
    """Activation range estimators (ONNX Runtime's calibrators)."""

    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"

    @classmethod
    def noun(cls) -> str:
        return "calibration method"

    def ort(self):
        from onnxruntime.quantization import CalibrationMethod

        return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}[self.value]


@dataclass(frozen=True)
class QuantizeConfig:
    """Everything that decides the bytes of an INT8 file (it keys the INT8 cache).

    `budget_db`: largest allowed Y-PSNR drop vs FP32 on the held-out T91 split (checked on the
    mean drop plus one standard error, see `sensitivity`).
    `max_float_nodes`: cap on the nodes the search may keep in float (None: no cap).
    `heldout_size`: LR crop side of the held-out images used by the search (small = fast).
    `percentile`: for `method=percentile`, the |x| percentile that sets the range.
    `hard_edge_floor_db`: lowest fidelity (PSNR to the FP32 model) allowed on any held-out crop
    cut to saturated colours (`data.hard_edge_crops`); the search keeps more layer groups float
    until it holds (None: no floor). 30 dB is what FP16 and BF16 engines hold on text and QR codes.
    It applies to range-guarded models only (`int8._range_guarded`).
    """

    method: str = "entropy"
    budget_db: float = 0.05
    patches: int = 64
    patch_size: int = 64
    seed: int = 0
    per_channel: bool = True
    max_float_nodes: int | None = None
    heldout_size: int = 64
    percentile: float = 99.999
    hard_edge_floor_db: float | None = 30.0
    op_types: tuple[str, ...] = QUANTIZED_OP_TYPES

    def __post_init__(self) -> None:
        Method.parse(self.method)
        if self.budget_db < 0:
            raise ElanDeployError(f"budget {self.budget_db} dB must be >= 0")
        if self.max_float_nodes is not None and self.max_float_nodes < 0:
            raise ElanDeployError(f"max float nodes {self.max_float_nodes} must be >= 0")
        if self.heldout_size < MULTIPLE or self.heldout_size % MULTIPLE:
            raise ElanDeployError(f"held-out crop size {self.heldout_size} must be a positive multiple of {MULTIPLE}")
        if not 90.0 < self.percentile <= 100.0:
            raise ElanDeployError(f"percentile {self.percentile} must be in (90, 100]")
        if self.hard_edge_floor_db is not None and self.hard_edge_floor_db <= 0:
            raise ElanDeployError(f"hard-edge floor {self.hard_edge_floor_db} dB must be > 0 (or none)")

    def key(self) -> str:
        return json.dumps({**asdict(self), "recipe": RECIPE_VERSION}, sort_keys=True)


@contextlib.contextmanager
def quiet_ort() -> Iterator[None]:
    """ORT's quantizer logs warnings and prints progress lines; keep the CLI's output clean."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


class _Reader:
    """`CalibrationDataReader` over a list of NCHW arrays (ORT checks for `get_next`)."""

    def __init__(self, input_name: str, arrays: Sequence[np.ndarray]) -> None:
        self._items = iter([{input_name: a} for a in arrays])

    def get_next(self) -> dict | None:
        return next(self._items, None)

    def __iter__(self):
        return self

    def __next__(self):
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


def _shape_groups(patches: Sequence[np.ndarray]) -> list[list[np.ndarray]]:
    """Patches grouped by shape (largest first, so histograms start with the widest range)."""
    by_shape: dict[tuple[int, ...], list[np.ndarray]] = {}
    for p in patches:
        by_shape.setdefault(p.shape, []).append(to_nchw(p))
    groups = []
    for shape in sorted(by_shape, key=lambda s: (-s[0] * s[1], s)):
        items = by_shape[shape]
        groups += [items[i : i + _GROUP] for i in range(0, len(items), _GROUP)]
    return groups


def input_name(model_path: Path) -> str:
    return onnx.load(str(model_path), load_external_data=False).graph.input[0].name


def calibrate(fp32: Path, patches: Sequence[np.ndarray], config: QuantizeConfig, out_json: Path) -> Path:
    """Run ORT's calibrator for `config.method` over the patches; write ORT's JSON range cache."""
    from onnxruntime.quantization.calibrate import TensorsData, create_calibrator, save_tensors_data

    if not patches:
        raise ElanDeployError("no calibration patches; pass a calibration folder with images")
    method = Method.parse(config.method)
    extra: dict[str, object] = {"symmetric": True}
    if method is Method.PERCENTILE:
        extra["percentile"] = config.percentile
    name = input_name(fp32)
    with temporary_dir("elan-calib") as tmp, quiet_ort():
        calibrator = create_calibrator(
            Path(fp32), list(config.op_types), augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=method.ort(), extra_options=extra,
        )
        for group in _shape_groups(patches):
            calibrator.collect_data(_Reader(name, group))
        ranges = calibrator.compute_data()
        del calibrator
    if not isinstance(ranges, TensorsData):
        raise ElanDeployError(f"ONNX Runtime's calibrator returned {type(ranges).__name__}; upgrade onnxruntime")
    with atomic_path(out_json) as tmp_json:
        save_tensors_data(ranges, tmp_json)
    return out_json


def quantize(
    fp32: Path,
    ranges_json: Path,
    config: QuantizeConfig,
    nodes_to_exclude: Sequence[str] = (),
    extra_options: dict[str, object] | None = None,
) -> onnx.ModelProto:
    """The Q/DQ model for `fp32` with the calibrated ranges; excluded nodes really stay float.

    `OpTypesToExcludeOutputQuantization` keeps Q/DQ off Conv/MatMul outputs: TensorRT and
    OpenVINO run an INT8 conv with a float output, and an output Q/DQ in front of a residual
    Add only adds rounding. `float_consumers_only` then undoes ORT's habit of feeding every
    consumer of a quantized tensor from its DequantizeLinear.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    options: dict[str, object] = {
        "ActivationSymmetric": True,
        "WeightSymmetric": True,
        "OpTypesToExcludeOutputQuantization": list(config.op_types),
    }
    options.update(extra_options or {})
    excluded = set(nodes_to_exclude)
    with temporary_dir("elan-int8") as tmp, quiet_ort():
        out = Path(tmp) / "model.int8.onnx"
        quantize_static(
            str(fp32), str(out), None, quant_format=QuantFormat.QDQ, op_types_to_quantize=list(config.op_types),
            per_channel=config.per_channel, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=sorted(excluded), calibrate_method=Method.parse(config.method).ort(),
            extra_options=options, calibration_cache_path=str(ranges_json),
        )
        model = onnx.load(str(out))
    float_model = onnx.load(str(fp32))
    quantized = {n.name for n in float_model.graph.node if n.op_type in config.op_types and n.name not in excluded}
    return float_consumers_only(model, quantized, float_model)


def float_consumers_only(model: onnx.ModelProto, quantized: set[str], float_model: onnx.ModelProto) -> onnx.ModelProto:
    """Let only the quantized nodes read DequantizeLinear outputs; everyone else reads float.

    ORT rewires *every* consumer of a quantized tensor to its DequantizeLinear. In ELAN the
    input of each LFE and GMSA is also the residual skip, so quantizing a conv's input
    quantized the residual stream itself, and the rounding piled up over 24 blocks (on the
    held-out T91 split: 44.9 dB output fidelity with the LFE inputs quantized that way, 53.6 dB
    with the skip left float). Excluded nodes that share a weight with a quantized node get
    the float weight back, so "float" means float.
    """
    graph = model.graph
    q_by_output = {n.output[0]: n for n in graph.node if n.op_type == "QuantizeLinear"}
    dq_by_output = {n.output[0]: n for n in graph.node if n.op_type == "DequantizeLinear"}
    float_of = {o: q_by_output[n.input[0]].input[0] for o, n in dq_by_output.items() if n.input[0] in q_by_output}
    initializers = {i.name for i in graph.initializer}
    float_weights = {i.name: i for i in float_model.graph.initializer}
    float_nodes = {n.name: n for n in float_model.graph.node}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)

    def float_weight(name: str) -> str:
        """Name of a float copy of weight `name` (which a DequantizeLinear may now produce)."""
        if name in initializers:
            return name
        if name in dq_by_output and all(r.name not in quantized for r in readers.get(name, [])):
            graph.node.remove(dq_by_output.pop(name))  # ORT names a bias's DQ output after the bias
            target = name
        else:
            target = name if name not in dq_by_output else f"{name}_float"
        copy = onnx.TensorProto()
        copy.CopyFrom(float_weights[name])
        copy.name = target
        graph.initializer.append(copy)
        initializers.add(target)
        return target

    for node in list(graph.node):
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") or node.name in quantized:
            continue
        original = float_nodes.get(node.name)
        for k, name in enumerate(node.input):
            if name in float_of:
                node.input[k] = float_of[name]
                continue
            weight = original.input[k] if original is not None and k < len(original.input) else None
            if weight in float_weights and (name != weight or name in dq_by_output):
                node.input[k] = float_weight(weight)  # a dequantized weight or bias: use the float one
    _drop_dead(graph)
    return model


def _drop_dead(graph: onnx.GraphProto) -> None:
    """Remove Q/DQ nodes and initializers nothing reads any more."""
    while True:
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.output[0] not in used]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
