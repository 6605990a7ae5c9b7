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
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from elan_deploy.calibration.data import HeldoutSample, to_nchw
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
    full_int8: onnx.ModelProto, float_model: onnx.ModelProto, groups: Sequence[LayerGroup], evaluator: HeldoutEvaluator,
    progress: Progress | None = None,
) -> list[Sensitivity]:
    """Each group's isolated damage: MSE vs FP32 with only that group quantized, worst first."""
    result = []
    for i, group in enumerate(groups):
        if progress:
            progress(f"probe {i + 1}/{len(groups)} {group.name}")
        only = onnx.ModelProto.FromString(full_int8.SerializeToString())
        float_consumers_only(only, set(group.nodes), float_model)
        result.append(Sensitivity(group.name, group.kind, len(group.nodes), evaluator.mse(only)))
    return sorted(result, key=lambda s: (-s.mse, s.group))


def _with_float(full_int8: onnx.ModelProto, float_model: onnx.ModelProto, float_nodes: set[str], quantizable: list[str]) -> onnx.ModelProto:
    model = onnx.ModelProto.FromString(full_int8.SerializeToString())
    return float_consumers_only(model, {n for n in quantizable if n not in float_nodes}, float_model)


def search(
    fp32: Path, ranges_json: Path, config: QuantizeConfig, evaluator: HeldoutEvaluator, progress: Progress | None = None,
) -> SearchResult:
    """Smallest set of float layer groups (greedy by sensitivity) meeting `config.budget_db`."""
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
        return best
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
    return best
