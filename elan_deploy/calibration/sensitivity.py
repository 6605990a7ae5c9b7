"""Mixed precision under a PSNR budget: measure which layer groups INT8 hurts, keep those float.

Two measures, both on the held-out T91 split (never on a test set):
- ranking: each layer group's *isolated* damage, the MSE between the FP32 output and the output
  with only that group quantized (float, unrounded: fine-grained and nearly additive over
  groups, so one probe per group ranks them);
- budget: the paper's metric, mean Y-PSNR against HR (uint8-rounded, `scale` border) of FP32
  minus that of the INT8 model. This is the number the acceptance figures on Set5/Set14/B100
  report, so the budget is stated in it. The budget must hold for the mean drop plus one
  standard error over the held-out images: per-image drops scatter (a clipped range can cost
  one image 0.5 dB while others gain), and a mean that is under budget only by luck of the
  18-image split should not pass.

Search (greedy by measured sensitivity, affordable on 2 cores): quantize everything and check
the budget; if it fails, probe every group (a probe is graph surgery on the fully quantized
model plus one run over small crops, ~1 s), predict from the probes how many of the worst
groups must stay float, then verify real models, floating one more group each time, until the
budget holds or the float-node cap is reached (`BudgetNotMet` then carries the best reached).

Hard-edge floor (`QuantizeConfig.hard_edge_floor_db`): the budget is stated on photographs, and
an engine that meets it can still lose text, QR codes and flat colour, which sit far outside
T91's activation ranges. So the search then checks the worst fidelity to FP32 over the held-out
crops cut to saturated colours (`data.hard_edge_crops`); when that is under the floor it probes
the remaining groups' isolated damage on those crops and floats the fewest of the worst that
hold it (bisected over the ranking, each candidate measured). Floating only moves the model
towards FP32; the budget is re-scored on the final set.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from elan_deploy.calibration.data import HeldoutSample, hard_edge_crops, to_nchw
from elan_deploy.calibration.layers import LayerGroup, layer_groups
from elan_deploy.calibration.recipes import QuantizeConfig, float_consumers_only, quantize
from elan_deploy.errors import ElanDeployError
from elan_deploy.imaging import to_uint8
from elan_deploy.metrics import psnr_y

Progress = Callable[[str], None]
PROBE_CROPS = 8  # held-out crops used to rank groups (all of them check the budget)


def _session(model: onnx.ModelProto | Path, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    payload = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(payload, options, providers=["CPUExecutionProvider"])


class HeldoutEvaluator:
    """Runs models on the held-out crops and scores them against FP32 and against HR."""

    def __init__(self, fp32: Path, samples: Sequence[HeldoutSample], scale: int, threads: int | None = None) -> None:
        if not samples:
            raise ElanDeployError("no held-out samples to check INT8 quality on")
        self.samples = list(samples)
        self.scale = scale
        self.threads = threads
        self.reference = self.outputs(fp32)
        self.reference_psnrs = self.per_image(self.reference)
        self.fp32_psnr = float(np.mean(self.reference_psnrs))

    def outputs(self, model: onnx.ModelProto | Path, limit: int | None = None) -> list[np.ndarray]:
        session = _session(model, self.threads)
        name = session.get_inputs()[0].name
        return [session.run(None, {name: to_nchw(s.lr)})[0][0] for s in self.samples[:limit]]

    def per_image(self, outputs: Sequence[np.ndarray]) -> np.ndarray:
        """Y-PSNR vs HR per crop as the paper computes it (uint8 outputs, `scale` border)."""
        return np.array([psnr_y(to_uint8(o.transpose(1, 2, 0)), s.hr, self.scale) for o, s in zip(outputs, self.samples)])

    def score(self, model: onnx.ModelProto | Path) -> HeldoutScore:
        """Y-PSNR of `model` and its drop vs FP32 (mean and standard error over the crops)."""
        mine = self.per_image(self.outputs(model))
        drops = self.reference_psnrs - mine
        se = float(np.std(drops, ddof=1) / np.sqrt(len(drops))) if len(drops) > 1 else 0.0
        return HeldoutScore(float(np.mean(mine)), float(np.mean(drops)), se)

    def mse(self, model: onnx.ModelProto | Path, limit: int = PROBE_CROPS) -> float:
        """Mean squared difference to the FP32 output (0..255 scale) on the first `limit` crops."""
        outs = self.outputs(model, limit)
        return float(np.mean([np.mean((o.astype(np.float64) - r) ** 2) for o, r in zip(outs, self.reference)]))


class HardEdgeEvaluator:
    """Fidelity to FP32 on the held-out crops cut to saturated colours (outputs clipped to 0..255)."""

    def __init__(self, fp32: Path, samples: Sequence[HeldoutSample], threads: int | None = None) -> None:
        self.crops = hard_edge_crops(list(samples))
        if not self.crops:
            raise ElanDeployError("no held-out samples to check INT8 on hard edges with")
        self.threads = threads
        self.reference = self.outputs(fp32)

    def outputs(self, model: onnx.ModelProto | Path, limit: int | None = None) -> list[np.ndarray]:
        session = _session(model, self.threads)
        name = session.get_inputs()[0].name
        return [np.clip(session.run(None, {name: to_nchw(c)})[0][0], 0, 255).astype(np.float64) for c in self.crops[:limit]]

    def worst_db(self, model: onnx.ModelProto | Path) -> float:
        """The lowest PSNR to FP32 over the crops (inf where a crop matches exactly)."""
        mses = [np.mean((o - r) ** 2) for o, r in zip(self.outputs(model), self.reference)]
        worst = max(mses)
        return float("inf") if worst <= 0 else float(10 * np.log10(255.0**2 / worst))

    def mse(self, model: onnx.ModelProto | Path, limit: int = PROBE_CROPS) -> float:
        return float(np.mean([np.mean((o - r) ** 2) for o, r in zip(self.outputs(model, limit), self.reference)]))


@dataclass(frozen=True)
class HeldoutScore:
    psnr: float  # mean Y-PSNR vs HR
    drop_db: float  # mean drop vs FP32
    stderr_db: float  # standard error of that mean over the held-out crops

    @property
    def upper_db(self) -> float:
        """What the budget is checked against: mean drop + one standard error."""
        return self.drop_db + self.stderr_db


@dataclass(frozen=True)
class Sensitivity:
    group: str
    kind: str
    nodes: int
    mse: float  # output MSE vs FP32 with only this group in INT8

    @property
    def fidelity_db(self) -> float:
        return float("inf") if self.mse <= 0 else 10 * np.log10(255.0**2 / self.mse)


@dataclass
class SearchResult:
    model: onnx.ModelProto
    float_groups: list[str]
    float_nodes: list[str]
    fp32_psnr: float
    score: HeldoutScore
    budget_db: float
    met: bool
    sensitivities: list[Sensitivity] = field(default_factory=list)
    steps: list[tuple[int, HeldoutScore]] = field(default_factory=list)  # (float nodes, score)
    seconds: float = 0.0
    hard_edge_db: float | None = None  # worst fidelity to FP32 on the hard-edge crops (None: no floor)
    hard_edge_groups: list[str] = field(default_factory=list)  # groups floated for the floor alone

    @property
    def drop_db(self) -> float:
        return self.score.drop_db


class BudgetNotMet(ElanDeployError):
    """The PSNR budget could not be met within the float-node cap; `.result` is the best reached."""

    def __init__(self, result: SearchResult, cap: int | None) -> None:
        self.result = result
        cap_text = f"the cap of {cap} float nodes" if cap is not None else "every layer group in float"
        super().__init__(
            f"INT8 budget {result.budget_db:.3f} dB not met on held-out T91 with {cap_text}: best drop "
            f"{result.score.drop_db:.3f} ± {result.score.stderr_db:.3f} dB with {len(result.float_nodes)} float nodes; "
            "raise --budget-db or --max-float-nodes"
        )


def probe_sensitivities(
    full_int8: onnx.ModelProto, float_model: onnx.ModelProto, groups: Sequence[LayerGroup],
    evaluator: HeldoutEvaluator | HardEdgeEvaluator, progress: Progress | None = None, label: str = "probe",
) -> list[Sensitivity]:
    """Each group's isolated damage: MSE vs FP32 with only that group quantized (on the
    evaluator's crops), worst first."""
    result = []
    for i, group in enumerate(groups):
        if progress:
            progress(f"{label} {i + 1}/{len(groups)} {group.name}")
        only = onnx.ModelProto.FromString(full_int8.SerializeToString())
        float_consumers_only(only, set(group.nodes), float_model)
        result.append(Sensitivity(group.name, group.kind, len(group.nodes), evaluator.mse(only)))
    return sorted(result, key=lambda s: (-s.mse, s.group))


def _with_float(full_int8: onnx.ModelProto, float_model: onnx.ModelProto, float_nodes: set[str], quantizable: list[str]) -> onnx.ModelProto:
    model = onnx.ModelProto.FromString(full_int8.SerializeToString())
    return float_consumers_only(model, {n for n in quantizable if n not in float_nodes}, float_model)


def search(
    fp32: Path, ranges_json: Path, config: QuantizeConfig, evaluator: HeldoutEvaluator, progress: Progress | None = None,
    hard_edges: HardEdgeEvaluator | None = None,
) -> SearchResult:
    """Smallest set of float layer groups (greedy by sensitivity) meeting `config.budget_db`,
    then, with `hard_edges` and a `config.hard_edge_floor_db`, enough more to hold that floor."""
    result, full, float_model = _budget_search(fp32, ranges_json, config, evaluator, progress)
    if hard_edges is not None and config.hard_edge_floor_db is not None:
        start = time.perf_counter() - result.seconds
        _hold_hard_edges(result, full, float_model, config, evaluator, hard_edges, progress)
        result.seconds = time.perf_counter() - start
    return result


def _hold_hard_edges(
    result: SearchResult, full: onnx.ModelProto, float_model: onnx.ModelProto, config: QuantizeConfig,
    evaluator: HeldoutEvaluator, hard_edges: HardEdgeEvaluator, progress: Progress | None,
) -> None:
    """Float the fewest of the groups that hurt the hard-edge crops most for the floor to hold."""
    floor = float(config.hard_edge_floor_db)  # type: ignore[arg-type]
    if progress:
        progress("check hard edges")
    result.hard_edge_db = hard_edges.worst_db(result.model)
    if result.hard_edge_db >= floor:
        return
    every = layer_groups(float_model, config.op_types)
    groups = [g for g in every if g.name not in set(result.float_groups)]
    quantizable = [n for g in every for n in g.nodes]
    by_name = {g.name: g for g in groups}
    damage = probe_sensitivities(full, float_model, groups, hard_edges, progress, label="hard-edge probe")
    ranked = [by_name[s.group] for s in damage]
    sizes = np.cumsum([len(group.nodes) for group in ranked]) + len(result.float_nodes)
    cap = config.max_float_nodes
    max_k = int(np.searchsorted(sizes, cap, side="right")) if cap is not None else len(ranked)
    tried: dict[int, tuple[onnx.ModelProto, float]] = {0: (result.model, result.hard_edge_db)}

    def floated(k: int) -> tuple[onnx.ModelProto, float]:
        """The model with the k most damaging groups float too, and its worst hard-edge fidelity."""
        if k not in tried:
            nodes = set(result.float_nodes) | {n for group in ranked[:k] for n in group.nodes}
            model = _with_float(full, float_model, nodes, quantizable)
            tried[k] = (model, hard_edges.worst_db(model))
            if progress:
                progress(f"hard edges: {k} more float groups, worst {tried[k][1]:.1f} dB")
        return tried[k]

    # Fewest groups that hold the floor: fidelity rises with every group floated, nearly
    # monotonically, so bisect on k (a few checks instead of one per group); k is only ever
    # accepted on its own measurement.
    k = max_k
    if floated(k)[1] >= floor:
        k = bisect_fewest(lambda n: floated(n)[1] >= floor, 0, k)
    model, worst = floated(k)
    result.hard_edge_groups = [group.name for group in ranked[:k]]
    float_groups = result.float_groups + result.hard_edge_groups
    float_nodes = result.float_nodes + [n for group in ranked[:k] for n in group.nodes]
    score = evaluator.score(model)
    result.steps.append((len(float_nodes), score))
    result.model, result.float_groups, result.float_nodes, result.score = model, float_groups, float_nodes, score
    result.met = score.upper_db <= config.budget_db
    result.hard_edge_db = worst


def bisect_fewest(holds: Callable[[int], bool], low: int, high: int) -> int:
    """The smallest k in (low, high] for which `holds(k)`, where `holds(high)` is known true,
    bisected: a few checks instead of one per k, each k decided on its own measurement."""
    while high - low > 1:
        middle = (low + high) // 2
        if holds(middle):
            high = middle
        else:
            low = middle
    return high


def _budget_search(
    fp32: Path, ranges_json: Path, config: QuantizeConfig, evaluator: HeldoutEvaluator, progress: Progress | None = None,
) -> tuple[SearchResult, onnx.ModelProto, onnx.ModelProto]:
    """Smallest set of float layer groups (greedy by sensitivity) meeting `config.budget_db`;
    with the fully quantized model and the float one, which the hard-edge floor reuses."""
    start = time.perf_counter()
    float_model = onnx.load(str(fp32))
    groups = layer_groups(float_model, config.op_types)
    quantizable = [n for g in groups for n in g.nodes]
    cap = config.max_float_nodes
    if progress:
        progress("quantize all layers")
    full = quantize(fp32, ranges_json, config)
    score_all = evaluator.score(full)
    best = SearchResult(
        full, [], [], evaluator.fp32_psnr, score_all, config.budget_db, score_all.upper_db <= config.budget_db, steps=[(0, score_all)]
    )
    if best.met or cap == 0:
        best.seconds = time.perf_counter() - start
        return best, full, float_model
    ranked = probe_sensitivities(full, float_model, groups, evaluator, progress)
    best.sensitivities = ranked
    by_name = {g.name: g for g in groups}
    total = sum(s.mse for s in ranked)
    # Predict: the drop shrinks roughly in proportion to the summed isolated MSE of the groups
    # left in INT8; start verifying at the smallest float set predicted to reach 80 % of budget.
    k, remaining = len(ranked), total
    for i, s in enumerate(ranked):
        if total > 0 and score_all.upper_db * remaining / total <= 0.8 * config.budget_db:
            k = i
            break
        remaining -= s.mse
    sizes = np.cumsum([len(by_name[s.group].nodes) for s in ranked])
    max_k = int(np.searchsorted(sizes, cap, side="right")) if cap is not None else len(ranked)
    k = min(max(k, 1), max_k)
    while 1 <= k <= max_k:
        float_groups = [s.group for s in ranked[:k]]
        float_nodes = [n for g in float_groups for n in by_name[g].nodes]
        if progress:
            progress(f"verify {k} float groups ({len(float_nodes)} nodes)")
        model = _with_float(full, float_model, set(float_nodes), quantizable)
        score = evaluator.score(model)
        best.steps.append((len(float_nodes), score))
        if score.upper_db < best.score.upper_db:
            best.model, best.float_groups, best.float_nodes, best.score = model, float_groups, float_nodes, score
        if score.upper_db <= config.budget_db:
            best.met = True
            break
        k += 1
    best.seconds = time.perf_counter() - start
    return best, full, float_model
