"""ncnn INT8 calibration and the float-fallback search, run on a small fp32 ncnn engine.

- Calibration: the T91 calibration crops of `calibration.data` (never a test set: its guard
  refuses them), run through the fp32 ncnn engine; each quantizable layer's input blob gives
  its activation scale 127/absmax, written in `ncnn2table`'s table format. Min-max, not
  ncnn2table's default KL: it needs one pass instead of two plus a threshold search per blob,
  the range guard already bounds the features to their T91 ranges, and the float
  fallback below measures what the rounding costs (ELAN-light x4: 3 of 38 groups kept fp32).
- The fp32 file runs any H x W (`any_size`), so calibration and the search run it on
  CALIBRATION_SIDE-square crops, and the INT8 engine is that same file rewritten: its layers
  are the ones the table was fitted on.
- Float fallback, as `calibration.sensitivity` does for the ONNX engines: quantize every layer;
  if the held-out T91 Y-PSNR drop (mean + 1 s.e.) is over the 0.05 dB budget, probe each
  layer group alone (output MSE vs fp32 on the first held-out crops), predict how many of the
  worst groups must stay fp32, then verify real engines, floating one more group each step
  until the budget holds (all groups fp32 always holds, so the search ends).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from elan_deploy.calibration.data import (
    CalibrationImages,
    PatchSpec,
    heldout_samples,
    load_patches,
    to_nchw,
)
from elan_deploy.calibration.recipes import QuantizeConfig
from elan_deploy.calibration.sensitivity import (
    PROBE_CROPS,
    HeldoutEvaluator,
    HeldoutScore,
    Sensitivity,
)
from elan_deploy.errors import DatasetError, WorkFailed
from elan_deploy.runtimes.base import BuildOptions, Precision, ShapeRange
from elan_deploy.runtimes.ncnn import int8_format
from elan_deploy.runtimes.ncnn_rt import (
    BIN,
    INPUT_BLOB,
    PARAM,
    TABLE,
    NcnnEngine,
    convert,
    import_ncnn,
)

CALIBRATION_SIDE = 32  # H = W of the crops that calibrate and run the search
# The search runs on one thread: a 32x32 crop gains little from more, and ncnn's spinning
# OpenMP workers stall by orders of magnitude when another process holds the cores (measured:
# 0.15 s per crop on one thread, 20-130 s on two, on a busy 2-core machine).
SEARCH_THREADS = 1
Progress = Callable[[str], None]


def input_absmax(folder: Path, images: Sequence[np.ndarray], layers: Sequence[int8_format.Layer], threads: int | None) -> dict[str, float]:
    """absmax of each layer's input blob over `images` (1,3,H,W float32 at the engine's shape),
    read from the fp32 engine's intermediate blobs."""
    ncnn = import_ncnn()
    net = NcnnEngine(folder, Precision.FP32, ShapeRange.static(images[0].shape), BuildOptions(threads)).net
    found = dict.fromkeys((layer.name for layer in layers), 0.0)
    for image in images:
        array = np.ascontiguousarray(image[0], dtype=np.float32)  # kept alive while the extractor reads it
        with net.create_extractor() as extractor:
            extractor.set_light_mode(False)  # keep every blob: each layer's input is read in one pass
            extractor.input(INPUT_BLOB, ncnn.Mat(array))
            for layer in layers:
                status, blob = extractor.extract(layer.bottoms[0])
                if status != 0:
                    raise WorkFailed(f"ncnn could not compute blob {layer.bottoms[0]} for INT8 calibration (status {status})")
                found[layer.name] = max(found[layer.name], float(np.abs(np.array(blob)).max()))
    return found


class NcnnHeldout(HeldoutEvaluator):
    """The held-out T91 scores of `sensitivity`, computed with ncnn engines (folders) at one shape."""

    def __init__(self, fp32: Path, samples: Sequence, scale: int, threads: int | None) -> None:
        side = CALIBRATION_SIDE
        self.shapes = ShapeRange.static((1, 3, side, side))
        super().__init__(fp32, [s for s in samples if s.lr.shape[:2] == (side, side)], scale, threads)

    def outputs(self, model: Any, limit: int | None = None) -> list[np.ndarray]:
        engine = NcnnEngine(Path(model), Precision.INT8, self.shapes, BuildOptions(self.threads))
        return [engine(to_nchw(s.lr))[0] for s in self.samples[:limit]]


@dataclass
class Int8Plan:
    """What the search settled on: the table of the INT8 layers and how it scored."""

    table: int8_format.Int8Table
    float_groups: list[str]
    score: HeldoutScore
    fp32_psnr: float
    budget_db: float
    sensitivities: list[Sensitivity] = field(default_factory=list)
    steps: list[tuple[int, float]] = field(default_factory=list)  # (float groups, drop + 1 s.e.)

    @property
    def met(self) -> bool:
        return self.score.upper_db <= self.budget_db


def _float_count(ranked: list[Sensitivity], first: HeldoutScore, budget: float) -> int:
    """The fewest worst groups predicted to bring the drop to 80 % of the budget (as `sensitivity`)."""
    total = remaining = sum(s.mse for s in ranked)
    for i, s in enumerate(ranked):
        if total > 0 and first.upper_db * remaining / total <= 0.8 * budget:
            return max(i, 1)
        remaining -= s.mse
    return len(ranked)


class Engines:
    """INT8 variants of the small fp32 engine, each written to a scratch folder and removed once measured."""

    def __init__(self, fp32: Path, full: int8_format.Int8Table, work: Path) -> None:
        self.fp32, self.full, self.work = fp32, full, work

    def measure(self, layers: Iterable[str], how: Callable[[Path], Any]) -> Any:
        with tempfile.TemporaryDirectory(prefix="probe-", dir=self.work) as tmp:
            folder = Path(tmp)
            int8_format.quantize_files(self.fp32 / PARAM, self.fp32 / BIN, self.full.only(layers), folder / PARAM, folder / BIN)
            return how(folder)


def search_int8(
    engines: Engines, groups: dict[str, list[str]], evaluator: NcnnHeldout, budget: float, progress: Progress | None = None,
) -> Int8Plan:
    """Quantize everything; while the held-out drop is over budget, keep the groups whose
    isolated INT8 damage is largest in fp32, one more each step (greedy, as `sensitivity.search`)."""
    full = engines.full
    score = engines.measure(full.activations, evaluator.score)
    plan = Int8Plan(full, [], score, evaluator.fp32_psnr, budget, steps=[(0, score.upper_db)])
    if plan.met:
        return plan
    for i, (group, names) in enumerate(groups.items()):
        if progress:
            progress(f"INT8 probe {i + 1}/{len(groups)} {group}")
        mse = engines.measure(names, lambda folder: evaluator.mse(folder, PROBE_CROPS))
        plan.sensitivities.append(Sensitivity(group, group.rsplit(".", 1)[-1], len(names), mse))
    ranked = sorted(plan.sensitivities, key=lambda s: (-s.mse, s.group))
    plan.sensitivities = ranked
    for k in range(_float_count(ranked, score, budget), len(ranked) + 1):
        float_groups = [s.group for s in ranked[:k]]
        if progress:
            progress(f"INT8 verify with {k} float groups")
        table = full.only(n for g, names in groups.items() if g not in float_groups for n in names)
        score = engines.measure(table.activations, evaluator.score)
        plan.steps.append((k, score.upper_db))
        if score.upper_db < plan.score.upper_db:
            plan.table, plan.float_groups, plan.score = table, float_groups, score
        if plan.met:
            break
    return plan


def _calibration_data(scale: int) -> tuple[list[np.ndarray], CalibrationImages, PatchSpec]:
    config = QuantizeConfig()
    spec = PatchSpec(scale=scale, patches=config.patches, patch_size=CALIBRATION_SIDE, seed=config.seed)
    patches, images = load_patches(spec)
    kept = [p for p in patches if p.shape[:2] == (CALIBRATION_SIDE, CALIBRATION_SIDE)]
    if not kept:
        raise DatasetError(
            f"no calibration image in '{images.folder}' gives a {CALIBRATION_SIDE}x{CALIBRATION_SIDE} LR crop at x{scale}; "
            f"add images of at least {CALIBRATION_SIDE * scale} px a side"
        )
    return kept, images, spec


def conv_modules(module: Any) -> dict[tuple[int, str], str]:
    """`int8_format.weight_key` -> name of every Conv2d of the deploy module PNNX converted."""
    from torch import nn

    return {int8_format.weight_key(m.weight.detach().cpu().numpy()): name for name, m in module.named_modules() if isinstance(m, nn.Conv2d)}


def plan_int8(fp32: Path, scale: int, work: Path, modules: dict[tuple[int, str], str], progress: Progress | None = None) -> tuple[Int8Plan, str]:
    """Calibrate on T91 crops with the fp32 file, then search the float groups (`modules`:
    `conv_modules` of what was converted) under the budget of the other INT8 engines; returns
    the plan and a line naming the data."""
    graph = int8_format.Graph.read(fp32 / PARAM)
    patches, images, spec = _calibration_data(scale)
    absmax = input_absmax(fp32, [to_nchw(p) for p in patches], graph.quantizable(), SEARCH_THREADS)
    weights = int8_format.read_weights(graph, fp32 / BIN)
    full = int8_format.table_for(graph, weights, absmax)
    full.write(work / TABLE)
    full = int8_format.Int8Table.read(work / TABLE)  # the engine uses the scales as the table holds them
    evaluator = NcnnHeldout(fp32, heldout_samples(images, scale, CALIBRATION_SIDE), scale, SEARCH_THREADS)
    plan = search_int8(Engines(fp32, full, work), int8_format.layer_groups(graph, weights, modules), evaluator, QuantizeConfig().budget_db, progress)
    data = f"{images.label}; {len(patches)} LR crops of {spec.patch_size} px, x{scale}, seed {spec.seed}; held-out crops: {len(evaluator.samples)}"
    return plan, data


def build_int8(module: Any, scale: int, out: Path, progress: Progress | None = None) -> dict[str, Any]:
    """Convert the fp32 file, calibrate and search on it with small crops, then write the INT8
    engine (its PARAM, BIN and TABLE) into `out`; returns the build record's `int8` entry."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".int8-", dir=out) as tmp:
        work = Path(tmp)
        fp32 = work / "fp32"
        fp32.mkdir()
        convert(module, fp16_weights=False, out=fp32)
        plan, data = plan_int8(fp32, scale, work, conv_modules(module), progress)
        layers = int8_format.quantize_files(fp32 / PARAM, fp32 / BIN, plan.table, out / PARAM, out / BIN)
    plan.table.write(out / TABLE)
    score = plan.score
    return {
        "table": TABLE, "activation_scales": "127/absmax of each layer's input over the calibration crops",
        "weight_scales": "127/absmax per output channel or group (31/absmax for 3x3 stride-1 convolutions: ncnn's INT8 winograd)",
        "calibration": data, "int8_layers": layers, "float_groups": plan.float_groups,
        "budget_db": plan.budget_db, "met": plan.met, "heldout_fp32_psnr": round(plan.fp32_psnr, 4),
        "heldout_drop_db": round(score.drop_db, 4), "heldout_drop_se_db": round(score.stderr_db, 4),
        "steps": [{"float_groups": k, "drop_plus_se_db": round(v, 4)} for k, v in plan.steps],
        "sensitivity": [{"group": s.group, "layers": s.nodes, "fidelity_db": round(s.fidelity_db, 2)} for s in plan.sensitivities],
        "seconds": round(time.perf_counter() - start, 1),
    }
