"""`--runtime auto`: the fastest engine within the quality budget on this machine.

The commands that make images (`upscale` for images, folders, Ray and video; `serve`) default to
it, so the speed users get without flags is the bench's best, not ONNX Runtime FP32 (2.4x slower
than OpenVINO INT8 in one bench run on a Zen 4). The pick comes from, in order:

1. the user's own last `bench` on this machine: every run copies its results.json into the cache
   (`LAST_RESULTS`); it is read when its CPU model and ISA flags are this machine's. The pick is
   the fastest latency cell at its first shape whose Y-PSNR is within `BUDGET_DB` of torch FP32 on
   every dataset the run scored and whose runtime is installed here;
2. else `MEASURED_ORDER`: per kind of CPU, the cells of one bench run in BENCHMARKS.md, fastest
   first, each within the budget on Set5 and Set14; the first whose runtime is installed wins.

`ELAN_DEPLOY_ENGINE=RUNTIME:PRECISION` replaces the pick (a site's standard engine, or one run
kept on a fixed engine). An explicit `--runtime` is never replaced; an explicit `--precision`
with `--runtime auto` keeps that precision and picks the fastest runtime for it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from elan_deploy.bench.matrix import REFERENCE, row_label
from elan_deploy.cpu import CpuCaps, cpu_caps_detected, cpu_model
from elan_deploy.errors import ElanDeployError
from elan_deploy.results import ResultsDoc
from elan_deploy.stress import STRESS_DATASET

BUDGET_DB = 0.05
ENGINE_ENV = "ELAN_DEPLOY_ENGINE"
LAST_RESULTS = Path("last-bench") / "results.json"  # under the cache root; written by every bench run
FALLBACK = ("onnxruntime", "fp32")  # a core dependency: always installed

# Fastest first; every cell within 0.05 dB of torch FP32 on Set5 and Set14 in the run named.
MEASURED_ORDER: dict[str, tuple[tuple[str, str], ...]] = {
    # BENCHMARKS.md "Headline": AMD EPYC Zen 4 (avx512_bf16, avx512_vnni), 2 threads, 1x3x180x320,
    # p50 582.9 / 721.6 / 1413.6 ms (1.60x / 1.29x / 0.66x torch-compile bf16)
    "AVX-512 BF16": (("openvino", "int8"), ("openvino", "bf16"), ("onnxruntime", "fp32")),
    # BENCHMARKS.md "ncnn, and the AVX2 default": AMD EPYC Zen 1 (AVX2 only), 2 threads, 1x3x180x320,
    # p50 2850.7 / 3815.4 ms; INT8 ran slower there (OpenVINO 3781.1, ONNX Runtime 4847.6 ms)
    "AVX2": (("openvino", "fp32"), ("onnxruntime", "fp32")),
}


@dataclass(frozen=True)
class EngineChoice:
    """What `--runtime auto` stands for here, and why (said in one line before the work starts)."""

    runtime: str
    precision: str
    reason: str

    def line(self) -> str:
        return f"--runtime auto: {self.runtime} {self.precision} ({self.reason}); pass --runtime and --precision to choose"


def cpu_kind(caps: CpuCaps) -> str:
    """The `MEASURED_ORDER` row for a CPU: bf16 arithmetic (AVX-512 BF16 or AMX) or not.

    AVX-512 without BF16 takes the AVX2 row: no run has measured that kind, and every cell of
    the AVX2 row runs on it natively.
    """
    return "AVX-512 BF16" if caps.bf16 else "AVX2"


def same_machine(doc: ResultsDoc) -> bool:
    machine = doc.machine
    return machine.get("cpu") == cpu_model() and sorted(machine.get("isa", [])) == sorted(set(cpu_caps_detected().isa))


def fastest_in_budget(doc: ResultsDoc, budget_db: float = BUDGET_DB) -> list[tuple[str, str]]:
    """The run's default-export cells within `budget_db` of torch FP32 on every dataset it scored (and
    with finite outputs on the stress set where the run scored it), fastest first at the run's first
    latency shape (Δ dB as in the report: the reference row is the paper model, the engines run what
    the bench ran)."""
    latency = [r for r in doc.latency() if r.p50_ms and row_label(r.data) == r.cell]
    reference = {q.dataset: q.psnr for q in doc.quality() if (q.runtime, q.precision) == REFERENCE}
    if not latency or not reference:
        return []
    scored: dict[tuple[str, str], list[bool]] = {}
    for q in doc.quality():
        if row_label(q.data) != q.cell:
            continue
        if q.dataset == STRESS_DATASET:  # off the photo domain the budget is a finite output, not Δ dB
            scored.setdefault((q.runtime, q.precision), []).append(q.get("raw_min") is not None and q.get("raw_max") is not None)
        elif q.dataset in reference:
            scored.setdefault((q.runtime, q.precision), []).append(q.psnr >= reference[q.dataset] - budget_db)
    within = {cell for cell, checks in scored.items() if all(checks)}
    shape = latency[0].shape
    timed = sorted((r for r in latency if r.shape == shape and (r.runtime, r.precision) in within), key=lambda r: r.p50_ms)
    return list(dict.fromkeys((r.runtime, r.precision) for r in timed))


def choose_engine(
    caps: CpuCaps,
    unavailable: Callable[[str], str | None],
    last: ResultsDoc | None = None,
    precision: str | None = None,
) -> EngineChoice:
    """The engine `--runtime auto` runs; `unavailable(runtime)` is None for an installed runtime.

    `precision` (an explicit `--precision`) restricts the pick to cells of that precision.
    """
    wanted = (lambda cell: cell[1] == precision) if precision else (lambda cell: True)
    if last is not None:
        for cell in fastest_in_budget(last):
            if wanted(cell) and unavailable(cell[0]) is None:
                return EngineChoice(*cell, f"the fastest within {BUDGET_DB} dB in your last bench on this machine")
    kind = cpu_kind(caps)
    for cell in MEASURED_ORDER[kind]:
        if wanted(cell) and unavailable(cell[0]) is None:
            return EngineChoice(*cell, f"the fastest installed engine within {BUDGET_DB} dB on {kind} CPUs in BENCHMARKS.md")
    if precision in (None, "fp32", "fp16", "int8"):
        return EngineChoice(FALLBACK[0], precision or FALLBACK[1], "no faster engine is installed")
    return EngineChoice("openvino" if unavailable("openvino") is None else "torch", precision, f"the installed engine that runs {precision}")


def engine_from_env() -> EngineChoice | None:
    """`ELAN_DEPLOY_ENGINE=RUNTIME:PRECISION`, checked; None when unset."""
    text = os.environ.get(ENGINE_ENV, "").strip()
    if not text:
        return None
    runtime, sep, precision = text.partition(":")
    if not sep or not runtime or not precision:
        raise ElanDeployError(f"${ENGINE_ENV}='{text}' is not RUNTIME:PRECISION; write e.g. onnxruntime:fp32, or unset it")
    return EngineChoice(runtime, precision.lower(), f"${ENGINE_ENV}")


def last_results(cache_root: Path) -> ResultsDoc | None:
    """The last bench's results when it ran on this machine, else None (also for an unreadable file)."""
    path = cache_root / LAST_RESULTS
    try:
        doc = ResultsDoc.load(path)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return doc if same_machine(doc) else None


def resolve(cache_root: Path, precision: str | None, caps: CpuCaps, unavailable: Callable[[str], str | None]) -> EngineChoice:
    """The choice for `--runtime auto` with `--precision precision` (None: auto)."""
    if (chosen := engine_from_env()) is not None:
        return replace(chosen, precision=precision or chosen.precision)
    return choose_engine(caps, unavailable, last_results(cache_root), precision)
