"""The INT8 recipe, end to end: T91 patches -> ranges -> search under budget -> Q/DQ ONNX file.

    from elan_deploy.calibration.int8 import QuantizeConfig, write_int8, int8_onnx_for
    report = write_int8(Path("elan-light-x4.fp32.onnx"), Path("elan-light-x4.int8.onnx"))
    path = int8_onnx_for(source)          # what the runtimes call for precision int8 (cached)

The file records how it was made in `metadata_props` (next to the export's own keys):
`int8_float_nodes`, `int8_float_groups`, `int8_method`, `int8_calibration`, `int8_budget_db`,
`int8_heldout_drop_db`, `int8_heldout_drop_se_db`, `int8_quantizer`, and with a hard-edge floor
`int8_hard_edge_floor_db` and `int8_hard_edge_worst_db` (see `sensitivity`).

Everything is deterministic for a fixed seed: patch positions come from a seeded RNG, ORT's
calibrators are order-preserving over a fixed patch order, the search is greedy over a
sorted ranking, and metadata carries no timings, so the same inputs give the same bytes
(and the same engine-cache keys downstream).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx

from elan_deploy.calibration.data import CalibrationImages, PatchSpec, calibration_cache_dir, heldout_samples, load_patches
from elan_deploy.calibration.layers import ensure_node_names
from elan_deploy.calibration.recipes import QuantizeConfig, calibrate, quantize
from elan_deploy.calibration.sensitivity import BudgetNotMet, HardEdgeEvaluator, HeldoutEvaluator, HeldoutScore, Sensitivity, search
from elan_deploy.errors import ElanDeployError
from elan_deploy.export.metadata import read_props, set_metadata
from elan_deploy.fileio import atomic_path
from elan_deploy.model.checkpoint import file_sha256
from elan_deploy.scratch import temporary_dir

__all__ = ["BudgetNotMet", "Int8Report", "QuantizeConfig", "default_config", "int8_onnx_for", "write_int8"]

Progress = Callable[[str], None]


@dataclass
class Int8Report:
    """What `write_int8` did (the CLI prints it; the bench stores it)."""

    path: Path
    config: QuantizeConfig
    calibration: str
    float_groups: list[str]
    float_nodes: list[str]
    score: HeldoutScore
    fp32_psnr: float
    met: bool
    sensitivities: list[Sensitivity] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    hard_edge_db: float | None = None  # worst fidelity to FP32 on the hard-edge crops (None: no floor)
    hard_edge_groups: list[str] = field(default_factory=list)  # float for the hard-edge floor alone

    @property
    def drop_db(self) -> float:
        return self.score.drop_db

    @property
    def hard_edge_met(self) -> bool | None:
        floor = self.config.hard_edge_floor_db
        return None if floor is None or self.hard_edge_db is None else self.hard_edge_db >= floor

    def to_json(self, model_id: str, scale: int) -> dict:
        """The `quantize --json` document (schema elan-deploy/int8/1)."""
        score = self.score
        return {
            "schema": "elan-deploy/int8/1", "model": model_id, "scale": scale, "output": str(self.path),
            "config": asdict(self.config), "calibration": self.calibration,
            "float_groups": self.float_groups, "float_nodes": self.float_nodes, "fp32_psnr": self.fp32_psnr,
            "int8_psnr": score.psnr, "heldout_drop_db": score.drop_db, "heldout_drop_se_db": score.stderr_db, "met": self.met,
            "hard_edge_worst_db": self.hard_edge_db, "hard_edge_groups": self.hard_edge_groups,
            "seconds": self.seconds,
            "sensitivity": [{"group": s.group, "kind": s.kind, "nodes": s.nodes, "mse": s.mse} for s in self.sensitivities],
        }


def default_config(**overrides: object) -> QuantizeConfig:
    """The default INT8 recipe: entropy ranges on 64 T91 patches, Q/DQ on Conv/MatMul inputs,
    float skip connections, greedy float set under 0.05 dB (mean + 1 s.e., held-out T91), then
    enough more float groups to hold 30 dB to FP32 on held-out T91 cut to saturated colours.

    Entropy was chosen on the held-out split (experiments/int8_search.py): it met the budget with
    the fewest float nodes and the lowest drop of the three ORT calibrators.
    """
    return replace(QuantizeConfig(), **overrides)  # type: ignore[arg-type]


def _scale_of(fp32: Path, scale: int | None) -> int:
    if scale is not None:
        return scale
    found = read_props(fp32).get("scale")
    if found is None:
        raise ElanDeployError(f"'{fp32}' does not say its scale (no elan-deploy metadata); pass --scale")
    return int(found)


def _ranges(fp32: Path, fp32_digest: str, patches: list[np.ndarray], images: CalibrationImages, spec: PatchSpec, config: QuantizeConfig, cache: Path) -> Path:
    """ORT's JSON range cache for this model, data and method (calibration runs once)."""
    import onnxruntime

    key = hashlib.sha256(
        "|".join(
            [fp32_digest, images.digest(), repr(spec), config.method, repr(config.percentile), ",".join(config.op_types), onnxruntime.__version__]
        ).encode()
    ).hexdigest()[:20]
    path = cache / f"ranges-{config.method}-{key}.json"
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        calibrate(fp32, patches, config, path)
    return path


def ranges_for(fp32: Path, config: QuantizeConfig, scale: int, calib_dir: Path | None = None, cache_dir: Path | None = None) -> Path:
    """ORT's JSON range cache that `write_int8` uses for this file, data and method (calibrated
    here when absent): what experiments re-quantize with other float sets."""
    cache = Path(cache_dir) if cache_dir is not None else calibration_cache_dir()
    spec = PatchSpec(scale=scale, patches=config.patches, patch_size=config.patch_size, seed=config.seed)
    patches, images = load_patches(spec, calib_dir, cache)
    return _ranges(Path(fp32), file_sha256(fp32), patches, images, spec, config, cache)


def _calibration_text(images: CalibrationImages, spec: PatchSpec, count: int) -> str:
    return (
        f"{images.label}; {count} LR patches of up to {spec.patch_size} px, x{spec.scale}, MATLAB bicubic, seed {spec.seed}"
    )


def write_int8(
    fp32: Path,
    out: Path,
    config: QuantizeConfig | None = None,
    *,
    scale: int | None = None,
    calib_dir: Path | None = None,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
    allow_over_budget: bool = False,
) -> Int8Report:
    """Calibrate on T91, search the float set under the budget, write the Q/DQ file atomically.

    Raises `BudgetNotMet` (one line, with the best drop reached) unless `allow_over_budget`,
    in which case the best model found is written and the report says `met=False`.
    """
    config = config or default_config()
    fp32 = Path(fp32)
    if not fp32.is_file():
        raise ElanDeployError(f"ONNX file '{fp32}' does not exist; run `elan-deploy export` first")
    scale = _scale_of(fp32, scale)
    cache = Path(cache_dir) if cache_dir is not None else calibration_cache_dir()
    with temporary_dir("elan-int8") as tmp_dir:
        return _write_int8(_named(fp32, Path(tmp_dir)), out, config, scale, calib_dir, cache, progress, allow_over_budget)


def _named(fp32: Path, folder: Path) -> Path:
    """`fp32`, or a copy whose unnamed nodes got names (exclusions and metadata use names)."""
    model = onnx.load(str(fp32), load_external_data=False)
    if all(node.name for node in model.graph.node):
        return fp32
    model = onnx.load(str(fp32))
    ensure_node_names(model)
    named = folder / fp32.name
    onnx.save(model, str(named))
    return named


def _write_int8(
    fp32: Path, out: Path, config: QuantizeConfig, scale: int, calib_dir: Path | None, cache: Path,
    progress: Progress | None, allow_over_budget: bool,
) -> Int8Report:
    import onnxruntime

    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    spec = PatchSpec(scale=scale, patches=config.patches, patch_size=config.patch_size, seed=config.seed)
    if progress:
        progress("calibration patches")
    patches, images = load_patches(spec, calib_dir, cache)
    if progress:
        progress(f"calibrate ({config.method})")
    ranges = _ranges(fp32, file_sha256(fp32), patches, images, spec, config, cache)
    seconds["calibrate"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    samples = heldout_samples(images, scale, config.heldout_size)
    evaluator = HeldoutEvaluator(fp32, samples, scale)
    hard_edges = HardEdgeEvaluator(fp32, samples) if config.hard_edge_floor_db is not None and _range_guarded(fp32) else None
    result = search(fp32, ranges, config, evaluator, progress, hard_edges)
    seconds["search"] = time.perf_counter() - t1
    if not result.met and not allow_over_budget:
        raise BudgetNotMet(result, config.max_float_nodes)
    # The artifact is made the documented way (quantize_static with nodes_to_exclude); it
    # computes exactly what the search measured (same Q/DQ set, same scales, float weights).
    model = quantize(fp32, ranges, config, result.float_nodes) if result.float_nodes else result.model
    calibration = _calibration_text(images, spec, len(patches))
    props = read_props(fp32)
    props.update(
        {
            "precision": "int8",
            "int8_float_nodes": ",".join(result.float_nodes),
            "int8_float_groups": ",".join(result.float_groups),
            "int8_method": config.method + (f" {config.percentile}" if config.method == "percentile" else ""),
            "int8_calibration": calibration,
            "int8_budget_db": f"{config.budget_db:g}",
            "int8_heldout_drop_db": f"{result.score.drop_db:.4f}",
            "int8_heldout_drop_se_db": f"{result.score.stderr_db:.4f}",
            **(
                {"int8_hard_edge_floor_db": f"{config.hard_edge_floor_db:g}", "int8_hard_edge_worst_db": f"{result.hard_edge_db:.2f}"}
                if result.hard_edge_db is not None else {}
            ),
            "int8_quantizer": (
                f"onnxruntime {onnxruntime.__version__} quantize_static QDQ: int8 symmetric, zero point 0, "
                f"per-channel weights, per-tensor activations, inputs of {'/'.join(config.op_types)}; float skip connections"
            ),
        }
    )
    set_metadata(model, props)
    with atomic_path(out) as tmp:
        onnx.save(model, str(tmp))
    seconds["total"] = time.perf_counter() - t0
    return Int8Report(
        Path(out), config, calibration, result.float_groups, result.float_nodes, result.score, result.fp32_psnr,
        result.met, result.sensitivities, seconds, result.hard_edge_db, result.hard_edge_groups,
    )


def _range_guarded(fp32: Path) -> bool:
    """Whether `fp32` carries the range guard: the hard-edge floor applies only then.

    The paper model (`--no-guard`) explodes on hard-edged inputs in FP32 itself, so there is no
    FP32 picture for INT8 to hold there; the floor would float every group to chase it.
    """
    return read_props(fp32).get("range_guard", "none") != "none"


def _int8_path(fp32: Path, key: str) -> Path:
    stem = fp32.name.removesuffix(".onnx").removesuffix(".fp32")
    folder = fp32.parent if os.access(fp32.parent, os.W_OK) else calibration_cache_dir() / "int8"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{stem}.int8-{key[:16]}.qdq.onnx"


def int8_onnx_for(source, config: QuantizeConfig | None = None, calib_dir: Path | None = None, progress: Progress | None = None) -> Path:
    """The default INT8 Q/DQ file for a `ModelSource`, cached next to its FP32 export.

    The cache key is the source fingerprint, the recipe settings, the calibration images and
    the ORT version, so any change re-runs calibration and search; an existing file with that
    key is returned as is.
    """
    import onnxruntime

    from elan_deploy.calibration.data import calibration_images

    config = config or default_config()
    fp32 = Path(source.onnx_path())
    key = hashlib.sha256(
        "|".join([source.fingerprint(), config.key(), calibration_images(calib_dir).digest(), onnxruntime.__version__]).encode()
    ).hexdigest()
    path = _int8_path(fp32, key)
    if not path.is_file():
        write_int8(fp32, path, config, scale=source.scale, calib_dir=calib_dir, progress=progress)
    return path
