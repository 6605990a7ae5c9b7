"""OpenVINO-native INT8 with NNCF, on the same T91 data and the same measured float set.

    from elan_deploy.calibration.nncf_int8 import NNCFConfig, nncf_int8_ir, nncf_int8_model
    report = nncf_int8_ir(source, Path("elan-light-x4.int8.xml"))   # IR on disk
    model = nncf_int8_model(source)                                   # ov.Model (for openvino_rt)

NNCF's defaults cost ELAN 1.3 dB (Set5): they quantize the input image (head conv), the tail
and every Add input, so the residual stream itself is rounded 48 times. What this module
changes, each for a reason measured on the Q/DQ path (see `recipes`, `sensitivity`):
- range estimator MINMAX (min of minima, max of maxima): averaged or quantile ranges clip
  the rare large activations that carry edges, which costs single images tenths of a dB;
- Add, Concat, Multiply, Softmax ignored (float skip connections; Q/DQ only on Conv/MatMul
  inputs, like the Q/DQ file), plus the layer groups the Q/DQ search kept float (read from
  the INT8 ONNX metadata, so both runtimes keep the same float set), or `float_nodes`;
- symmetric activations (preset PERFORMANCE) like TensorRT's rules, or MIXED to let ReLU
  outputs use the full unsigned range (`preset="mixed"`).
`accuracy_control=True` runs `nncf.quantize_with_accuracy_control` with a Y-PSNR validation
function on the held-out T91 split (never a test set) and `max_drop=budget_db`.
`hard_edge_floor_db`: the Q/DQ recipe's hard-edge floor, held again by the NNCF model as the
OpenVINO engine runs it (`nncf_hard_edges`): it floats more groups where NNCF's ranges lose
text and flat colour that the Q/DQ file kept.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from elan_deploy.calibration.data import PatchSpec, calibration_cache_dir, heldout_samples, load_patches, to_nchw
from elan_deploy.calibration.nncf_hard_edges import OpenVINOHardEdgeHold, Progress, hold_hard_edges
from elan_deploy.calibration.recipes import QuantizeConfig
from elan_deploy.errors import RuntimeUnavailable
from elan_deploy.imaging import to_uint8
from elan_deploy.metrics import psnr_y
from elan_deploy.scratch import temporary_dir

FLOAT_TYPES: tuple[str, ...] = ("Add", "Concat", "Multiply", "Softmax")


@dataclass(frozen=True)
class NNCFConfig:
    """How NNCF quantizes the OpenVINO model (see the module docstring for why)."""

    preset: str = "performance"
    float_nodes: tuple[str, ...] | None = None  # None: the float set of the Q/DQ recipe
    ignore_types: tuple[str, ...] = FLOAT_TYPES
    range_estimator: str = "minmax"  # or "default" (NNCF's own)
    fast_bias_correction: bool = True
    transformer: bool = False  # nncf.ModelType.TRANSFORMER
    accuracy_control: bool = False
    budget_db: float = 0.05  # max_drop for accuracy control (Y-PSNR on held-out T91)
    patches: int = 64
    patch_size: int = 64
    seed: int = 0
    heldout_size: int = 64
    hard_edge_floor_db: float | None = QuantizeConfig.hard_edge_floor_db  # None: no floor of OpenVINO's own


# The precision the OpenVINO INT8 engine runs its float islands in (`runtimes.openvino_rt`); the
# hard-edge floor measures the model in it. OpenVINO falls back to f32 where the CPU lacks bf16.
ENGINE_INFERENCE_PRECISION = "bf16"
RT_INFO_SECTION = "elan_deploy"  # rt_info path prefix of what the IR records about its quantization


@dataclass
class NNCFReport:
    xml: Path
    config: NNCFConfig
    ignored_nodes: list[str] = field(default_factory=list)
    heldout_fp32_psnr: float | None = None
    heldout_int8_psnr: float | None = None
    seconds: float = 0.0
    hard_edges: OpenVINOHardEdgeHold | None = None  # None: no floor (unguarded model, or none asked)


def _imports():
    try:
        import nncf
        import openvino as ov
    except ImportError:
        raise RuntimeUnavailable("NNCF/OpenVINO are not installed; pip install 'elan-deploy[openvino]'") from None
    return nncf, ov


def ignored_scope(model, float_nodes: Sequence[str], ignore_types: Sequence[str]):
    """An nncf.IgnoredScope naming the OpenVINO ops of the given ONNX nodes, plus whole op types.

    OpenVINO keeps ONNX node names as friendly names, with `/WithoutBiases` on convs whose
    bias became a separate Add.
    """
    nncf, _ = _imports()
    names = {op.get_friendly_name() for op in model.get_ordered_ops()}
    wanted = [n for node in float_nodes for n in (node, f"{node}/WithoutBiases") if n in names]
    present_types = {op.get_type_name() for op in model.get_ordered_ops()}
    return nncf.IgnoredScope(names=sorted(wanted), types=[t for t in ignore_types if t in present_types], validate=False)


def float_nodes_of(source, progress: Progress | None = None) -> list[str]:
    """The ONNX nodes the Q/DQ recipe keeps float for `source` (read from its INT8 ONNX metadata)."""
    from elan_deploy.calibration.int8 import int8_onnx_for
    from elan_deploy.export.metadata import read_props

    text = read_props(int8_onnx_for(source, progress=progress)).get("int8_float_nodes", "")
    return [n for n in text.split(",") if n]


def _range_params(config: NNCFConfig):
    nncf, _ = _imports()
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    if config.range_estimator == "minmax":
        return AdvancedQuantizationParameters(activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX)
    return AdvancedQuantizationParameters()


def quantize_ov(fp32_onnx: Path, scale: int, float_nodes: Sequence[str], config: NNCFConfig = NNCFConfig(), calib_dir: Path | None = None):
    """(ov.Model with FakeQuantize, ignored node names, held-out (fp32, int8) PSNR or None)."""
    nncf, ov = _imports()
    spec = PatchSpec(scale=scale, patches=config.patches, patch_size=config.patch_size, seed=config.seed)
    patches, images = load_patches(spec, calib_dir)
    model = ov.convert_model(str(fp32_onnx))
    scope = ignored_scope(model, float_nodes, config.ignore_types)
    # one sample per item: patches have several shapes and the model's H, W are dynamic
    calibration = nncf.Dataset([to_nchw(p) for p in patches])
    kwargs = dict(
        preset=nncf.QuantizationPreset(config.preset), subset_size=len(patches), fast_bias_correction=config.fast_bias_correction,
        model_type=nncf.ModelType.TRANSFORMER if config.transformer else None, ignored_scope=scope, target_device=nncf.TargetDevice.CPU,
    )
    level = nncf.nncf_logger.level
    nncf.set_log_level(logging.ERROR)  # NNCF lists every ignored node at INFO
    try:
        quantized, psnrs = _run_nncf(nncf, ov, model, calibration, images, scale, config, kwargs)
    finally:
        nncf.set_log_level(level)
    return quantized, list(scope.names), psnrs


def quantize_held(
    fp32_onnx: Path, scale: int, float_nodes: Sequence[str], config: NNCFConfig = NNCFConfig(), calib_dir: Path | None = None,
    inference_precision: str = ENGINE_INFERENCE_PRECISION, progress: Progress | None = None,
):
    """`quantize_ov`, then the hard-edge floor held as the engine runs the model:
    (ov.Model, ignored node names, held-out PSNRs or None, the floor's record or None).

    The floor applies to range-guarded models only: the paper model explodes on hard edges in
    FP32 itself, so there is no FP32 picture to hold (as in the Q/DQ search).
    """
    from elan_deploy.calibration.data import calibration_images
    from elan_deploy.export.metadata import read_props

    if progress:
        progress("NNCF quantization")
    model, ignored, psnrs = quantize_ov(fp32_onnx, scale, float_nodes, config, calib_dir)
    if config.hard_edge_floor_db is None or read_props(fp32_onnx).get("range_guard", "none") == "none":
        return model, ignored, psnrs, None
    samples = heldout_samples(calibration_images(calib_dir), scale, config.heldout_size)
    made = {id(model): (ignored, psnrs)}  # each candidate's ignored scope and PSNRs, for the one kept

    def quantizer(nodes: Sequence[str]):
        candidate, candidate_ignored, candidate_psnrs = quantize_ov(fp32_onnx, scale, nodes, config, calib_dir)
        made[id(candidate)] = (candidate_ignored, candidate_psnrs)
        return candidate

    model, hold = hold_hard_edges(model, fp32_onnx, float_nodes, quantizer, samples, config.hard_edge_floor_db, inference_precision, progress)
    for key, value in hold.rt_info().items():
        model.set_rt_info(value, [RT_INFO_SECTION, key])
    return (model, *made[id(model)], hold)


def _run_nncf(nncf, ov, model, calibration, images, scale: int, config: NNCFConfig, kwargs: dict):
    psnrs = None
    if not config.accuracy_control:
        quantized = nncf.quantize(model, calibration, advanced_parameters=_range_params(config), **kwargs)
    else:
        samples = heldout_samples(images, scale, config.heldout_size)

        def validate(compiled, data) -> tuple[float, list[float]]:
            """Mean Y-PSNR vs HR (the budget's metric) and the per-crop values NNCF ranks with."""
            out = compiled.output(0)
            values = [psnr_y(to_uint8(compiled(to_nchw(s.lr))[out][0].transpose(1, 2, 0)), s.hr, scale) for s in data]
            return float(np.mean(values)), values

        quantized = nncf.quantize_with_accuracy_control(
            model, calibration, nncf.Dataset(samples), validate, max_drop=config.budget_db, drop_type=nncf.DropType.ABSOLUTE,
            advanced_quantization_parameters=_range_params(config), **kwargs,
        )
        core = ov.Core()
        hint = {"INFERENCE_PRECISION_HINT": "f32"}
        psnrs = tuple(validate(core.compile_model(m, "CPU", hint), samples)[0] for m in (model, quantized))
    return quantized, psnrs


def nncf_int8_model(
    source, config: NNCFConfig = NNCFConfig(), calib_dir: Path | None = None, inference_precision: str = ENGINE_INFERENCE_PRECISION,
    progress: Progress | None = None,
):
    """The NNCF-quantized `ov.Model` of `source` (dynamic shapes; reshape it before saving).

    The quantized IR is cached next to the FP32 export, keyed by the model, recipe, float set,
    calibration images, OpenVINO/NNCF versions and the arithmetic the hard-edge floor measured
    (the inference precision and whether this CPU has it): NNCF's calibration costs minutes, and every
    static engine shape (the bench builds one per latency shape, in its own process) reuses it.
    A per-file lock makes concurrent builders quantize once.
    """
    import hashlib

    from filelock import FileLock

    from elan_deploy.calibration.data import calibration_images

    nncf, ov = _imports()
    float_nodes = list(config.float_nodes) if config.float_nodes is not None else float_nodes_of(source, progress)
    fp32 = Path(source.onnx_path())
    key = hashlib.sha256("|".join([
        source.fingerprint(), repr(config), ",".join(float_nodes), calibration_images(calib_dir).digest(),
        ov.get_version(), nncf.__version__, inference_precision, ",".join(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")),
    ]).encode()).hexdigest()[:16]
    folder = fp32.parent if os.access(fp32.parent, os.W_OK) else calibration_cache_dir() / "nncf"
    folder.mkdir(parents=True, exist_ok=True)
    xml = folder / f"{fp32.name.removesuffix('.onnx').removesuffix('.fp32')}.nncf-int8-{key}.xml"
    with FileLock(str(folder / f".{xml.name}.lock")):
        if not (xml.is_file() and xml.with_suffix(".bin").is_file()):
            model = quantize_held(fp32, source.scale, float_nodes, config, calib_dir, inference_precision, progress)[0]
            write_ir(model, xml)
    return ov.Core().read_model(str(xml))


def nncf_int8_ir(
    source, out_xml: Path, config: NNCFConfig = NNCFConfig(), calib_dir: Path | None = None,
    inference_precision: str = ENGINE_INFERENCE_PRECISION,
) -> NNCFReport:
    """Quantize `source`'s FP32 ONNX with NNCF and write an OpenVINO IR (xml + bin) atomically."""
    start = time.perf_counter()
    float_nodes = list(config.float_nodes) if config.float_nodes is not None else float_nodes_of(source)
    quantized, ignored, psnrs, hold = quantize_held(Path(source.onnx_path()), source.scale, float_nodes, config, calib_dir, inference_precision)
    write_ir(quantized, Path(out_xml))
    return NNCFReport(Path(out_xml), config, ignored, *(psnrs or (None, None)), seconds=time.perf_counter() - start, hard_edges=hold)


def write_ir(model, out_xml: Path) -> Path:
    """Save an IR pair so that readers never see an .xml without its .bin (bin lands first)."""
    _, ov = _imports()
    out_xml.parent.mkdir(parents=True, exist_ok=True)
    with temporary_dir(f".{out_xml.stem}", parent=out_xml.parent) as tmp:
        staged = Path(tmp) / out_xml.name
        ov.save_model(model, str(staged), compress_to_fp16=False)
        os.replace(staged.with_suffix(".bin"), out_xml.with_suffix(".bin"))
        os.replace(staged, out_xml)
    return out_xml


def ov_node_pattern(onnx_node: str) -> str:
    """Regex for the OpenVINO op(s) an ONNX node becomes (for hand-written ignored scopes)."""
    return "^" + re.escape(onnx_node) + "(/WithoutBiases)?$"
