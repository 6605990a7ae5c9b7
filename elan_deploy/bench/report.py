"""Benchmark report: report.md from a results document (the common schema).

The pictures live in `bench.figures`; `write_scatter` and `write_crops` are re-exported here
for callers that import them from this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from elan_deploy.bench.compare import headline_reference
from elan_deploy.bench.figures import write_crop_figure, write_crops, write_scatter
from elan_deploy.bench.figures.cells import written_fidelity
from elan_deploy.bench.matrix import row_label
from elan_deploy.fileio import write_bytes_atomic
from elan_deploy.results import LatencyRow, QualityRow, ResultsDoc, ResultsLike, Row
from elan_deploy.stress import CLASSES, FIDELITY_FLOOR_DB, FLAT_FLOORS, RAW_BOUNDS, STRESS_DATASET

__all__ = ["render_markdown", "summary_rows", "unsteady_machine_warning", "write_crop_figure", "write_crops",
           "write_report", "write_scatter"]


def _cells(rows: list[Row]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        seen.setdefault(row_label(row.data), None)
    return list(seen)


def summary_rows(doc: ResultsLike, main_shape: str, dataset: str) -> list[dict[str, Any]]:
    """One dict per cell: latency at the main shape, quality on one dataset, ratios to baselines."""
    doc = ResultsDoc.of(doc)
    latency = {row_label(r.data): r for r in doc.latency(main_shape)}
    quality = {row_label(r.data): r for r in doc.quality(dataset)}
    base_eager = latency["torch fp32"].p50_ms if "torch fp32" in latency else None
    reference = headline_reference(doc, main_shape)  # the fastest torch-compile cell of this run
    base_compile = reference["p50_ms"] if reference else None
    ref_psnr = quality["torch fp32"].psnr if "torch fp32" in quality else None
    out = []
    for label in _cells([r for r in doc.rows if isinstance(r, (LatencyRow, QualityRow))]):
        lat, q = latency.get(label), quality.get(label)
        p50 = lat.p50_ms if lat else None
        out.append({
            "cell": label,
            "used": (lat.precision_used if lat else None) or (q.precision_used if q else None),
            "threads": (lat.threads if lat else None) or (q.threads if q else None),
            "p50_ms": p50, **_latency_columns(lat),
            "speedup_vs_eager": base_eager / p50 if p50 and base_eager else None,
            "speedup_vs_compile": base_compile / p50 if p50 and base_compile else None,
            "psnr": q.psnr if q else None, "ssim": q.ssim if q else None,
            "delta_db": q.psnr - ref_psnr if q and ref_psnr is not None else None,
            "fidelity_psnr": written_fidelity(q, lat),
        })
    return out


def _latency_columns(lat: LatencyRow | None) -> dict[str, Any]:
    """The summary's latency figures besides p50, in its column order; None each for a cell not timed at the main shape."""
    if lat is None:
        return dict.fromkeys(("p90_ms", "p99_ms", "images_per_s", "output_mpix_per_s", "min_ms", "engine_rss_mb", "build_s", "engine_mb"))
    return {"p90_ms": lat.p90_ms, "p99_ms": lat.p99_ms, "images_per_s": lat.get("images_per_s"), "output_mpix_per_s": lat.get("output_mpix_per_s"),
            "min_ms": lat.min_ms, "engine_rss_mb": lat.get("engine_rss_mb"), "build_s": lat.get("build_s"), "engine_mb": lat.get("engine_mb")}


BUSY_OTHER_CPU_PCT = 10.0
BUSY_STEAL_PCT = 5.0
UNSTEADY_ROUND_SPREAD_PCT = 25.0


def unsteady_machine_warning(doc: ResultsLike) -> str | None:
    """A one-line warning when the machine's speed moved while latency was timed, and why if known.

    Other processes and hypervisor steal are measured directly. A large spread between rounds with
    neither means the host itself changed speed (on shared VMs: other guests on the same cores,
    where the vCPUs are placed). Interleaved rounds make such a change land on every cell, so
    ratios within the run still hold while absolute figures move between runs.
    """
    latency = ResultsDoc.of(doc).latency()
    if not latency:
        return None
    other = max(r.get("other_cpu_pct", 0.0) for r in latency)
    steal = max(r.get("steal_pct", 0.0) for r in latency)
    spread = float(np.median([r.get("round_spread_pct", 0.0) for r in latency]))
    if other > BUSY_OTHER_CPU_PCT or steal > BUSY_STEAL_PCT:
        return (f"warning: the machine was busy while latency was timed (other processes up to {other:.0f} % CPU, "
                f"hypervisor steal up to {steal:.0f} %); latency figures are noisy: compare cells within this run, "
                f"or rerun when it is quiet")
    if spread > UNSTEADY_ROUND_SPREAD_PCT:
        return (f"warning: latency moved by {spread:.0f} % between rounds (median over cells) with no other load; the host "
                f"changed speed during the run. Compare cells within this run: ratios between cells hold, absolute figures "
                f"move between runs")
    return None


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _guard_note(rows: list[Row]) -> str:
    """Which model each cell ran: the range-guarded one, or the paper model (`guard` of the rows)."""
    guarded = sorted({row_label(r.data) for r in rows if r.guard == "guarded"})
    unguarded = sorted({row_label(r.data) for r in rows if r.guard == "unguarded"})
    if not guarded:
        return "Every cell ran the unguarded paper model (`--no-guard`)." if unguarded else ""
    return (f"Model: every cell ran the range-guarded model (features clamped to their T91 ranges) except "
            f"{', '.join(unguarded) or 'none'}, the unguarded paper model; Δ dB of the others includes what the guard costs.")


def render_markdown(doc: ResultsLike, main_shape: str, dataset: str) -> str:
    doc = ResultsDoc.of(doc)
    m = doc.machine
    parts = [
        f"# elan-deploy benchmark — {doc.rows[0].model if doc.rows else ''}",
        "",
        f"Machine: {m['cpu']}{f' ({cpu_id})' if (cpu_id := m.get('cpu_id')) else ''}, {m['cores']} cores ({', '.join(m.get('isa', [])) or 'no SIMD flags read'}); {m['os']}; "
        f"Python {m['python']}, torch {m['torch']}, elan-deploy {m['elan_deploy']}. Command: `{doc.data.get('command', 'elan-deploy bench')}`."
        + (f" Latency workers' malloc: {', '.join(allocators)}." if (allocators := sorted({str(r.allocator) for r in doc.latency() if r.allocator is not None})) else ""),
        "",
        *([f"**{warning}**", ""] if (warning := unsteady_machine_warning(doc)) else []),
        f"## Summary at {main_shape} (latency) and {dataset} (quality)",
        "",
        "Speed-ups are p50 ratios measured in this run. Δ dB is Y-PSNR against the torch FP32 row; fidelity is the PSNR "
        "of the engine's RGB output against the torch FP32 output (∞ = identical).",
        "",
        *([_guard_note(doc.rows), ""] if _guard_note(doc.rows) else []),
    ]
    header = ["cell", "precision used", "threads", "min ms", "p50 ms", "p90 ms", "p99 ms", "img/s", "out MP/s", "engine RSS MB",
              "vs torch eager", f"vs {ref['cell'] if (ref := headline_reference(doc, main_shape)) else 'torch.compile'}", f"{dataset} PSNR", "Δ dB", "SSIM", "fidelity dB", "build s"]
    body = [[
        s["cell"], _fmt(s["used"]), _fmt(s["threads"]), _fmt(s["min_ms"], 1), _fmt(s["p50_ms"], 1), _fmt(s["p90_ms"], 1),
        _fmt(s["p99_ms"], 1), _fmt(s["images_per_s"], 3), _fmt(s["output_mpix_per_s"], 3), _fmt(s["engine_rss_mb"], 0),
        _fmt(s["speedup_vs_eager"]) + ("×" if s["speedup_vs_eager"] else ""),
        _fmt(s["speedup_vs_compile"]) + ("×" if s["speedup_vs_compile"] else ""),
        _fmt(s["psnr"], 4), _fmt(s["delta_db"], 4), _fmt(s["ssim"], 4), _fmt(s["fidelity_psnr"]), _fmt(s["build_s"], 1),
    ] for s in summary_rows(doc, main_shape, dataset)]
    parts += [markdown_table(header, body), ""]
    if best := doc.data.get("best_cell"):
        parts += [f"Fastest cell within 0.05 dB of torch fp32 on this machine: **{best.get('cell', best) if isinstance(best, dict) else best}**.", ""]

    quality = doc.quality()
    if quality:
        parts += ["## Quality per dataset (Y channel, border = scale)", ""]
        parts.append(markdown_table(
            ["cell", "dataset", "images", "PSNR", "SSIM", "fidelity dB"],
            [[row_label(r.data), r.dataset, str(r.images), _fmt(r.psnr, 4), _fmt(r.ssim, 4), _fmt(written_fidelity(r, None))] for r in quality],
        ))
        parts.append("")
    parts += _stress_section([r for r in quality if r.dataset == STRESS_DATASET])
    latency = doc.latency()
    if latency:
        parts += ["## Latency per shape", "", LATENCY_NOTE, ""]
        parts.append(markdown_table(
            ["cell", "shape", "engine shape", "timed runs", "min ms", "p50 ms", "p90 ms", "p99 ms", "max ms", "round spread %",
             "img/s", "out MP/s", "peak RSS MB", "engine RSS MB", "engine MB", "other CPU %", "steal %"],
            [[row_label(r.data), r.shape, r.engine_shape, _timed_runs(r), _fmt(r.min_ms, 1),
              _fmt(r.p50_ms, 1), _fmt(r.p90_ms, 1), _fmt(r.p99_ms, 1), _fmt(r.max_ms, 1), _fmt(r.get("round_spread_pct"), 1),
              _fmt(r.get("images_per_s"), 3), _fmt(r.get("output_mpix_per_s"), 3), _fmt(r.get("peak_rss_mb"), 0), _fmt(r.get("engine_rss_mb"), 0),
              _fmt(r.get("engine_mb")), _fmt(r.get("other_cpu_pct"), 1), _fmt(r.get("steal_pct"), 1)] for r in latency],
        ))
        parts.append("")
    skipped = doc.not_run()
    if skipped:
        parts += ["## Not run here", ""]
        parts.append(markdown_table(
            ["cell", "shape", "status", "reason"], [[row_label(r.data), r.shape or "all", r.kind.value, r.reason] for r in skipped],
        ))
        parts.append("")
    return "\n".join(parts)


def _stress_section(rows: list[QualityRow]) -> list[str]:
    """The stress set's raw-input measures per cell, and which cells hold on it (`bench.stress_rows`)."""
    if not rows:
        return []
    low, high = RAW_BOUNDS
    floors = ", ".join(f"{kind} ≥ {floor * 100:.0f} %" for kind, floor in FLAT_FLOORS.items())
    body = []
    for r in rows:
        flat = r.get("flat_share") or {}
        raw = f"{r.get('raw_min'):.0f}..{r.get('raw_max'):.0f}" if r.get("raw_min") is not None else "not finite"
        body.append([row_label(r.data), r.guard or "–", raw, *(_fmt(flat[k] * 100, 1) if k in flat else "–" for k in CLASSES),
                     _fmt(r.get("stress_fidelity_db"), 1), _fmt(r.psnr, 4), "yes" if r.get("stress_holds") else "; ".join(r.get("stress_failures") or ["no"])])
    holding = [row_label(r.data) for r in rows if r.get("stress_holds")]
    return [
        f"## Stress set: text, UI, QR, pixel art, line art, colour blocks ({rows[0].images} images)", "",
        f"On the raw inputs: the raw output range, the % of output pixels within 12 levels of the input's colour in regions flat "
        f"in the input (worst image per class), and the lowest PSNR against the range-guarded torch FP32 model. A cell holds with "
        f"raw outputs in {low:.0f}..{high:.0f}, {floors} clean, and at least {FIDELITY_FLOOR_DB['fp32']:.0f} dB (FP32) or "
        f"{FIDELITY_FLOOR_DB['reduced']:.0f} dB (reduced precisions) from guarded FP32. PSNR vs HR is the Y-PSNR on the HR renders' "
        f"bicubic downscales. Holding here: {', '.join(holding) or 'none'}.", "",
        markdown_table(["cell", "model", "raw output", *(f"flat {k} %" for k in CLASSES), "worst dB vs guarded fp32", "PSNR vs HR", "holds"], body),
        "",
    ]


LATENCY_NOTE = (
    "Each engine runs in its own process, static for its shape; the rounds of all engines at a shape are interleaved, so "
    "a slow spell of the machine lands on all of them. Timed runs counts every timed run, all rounds together "
    "(\"25 in 5 rounds of 5\"); warm-up runs are not counted. Round spread is (slowest − fastest round median) / p50. Peak RSS is "
    "the worker's high-water mark (Python and torch included); engine RSS is what loading and running the engine added. "
    "Other CPU % is machine CPU used by other processes while the shape was timed, steal % what the hypervisor took: "
    "above a few percent, treat the numbers as noisy."
)


def _timed_runs(row: LatencyRow) -> str:
    """`iterations` counts every timed run; the rounds share them."""
    runs, rounds = row.iterations, row.rounds
    if rounds <= 1:
        return f"{runs} in 1 round"
    per_round = f" of {runs // rounds}" if runs % rounds == 0 else ""
    return f"{runs} in {rounds} rounds{per_round}"


def write_report(doc: ResultsLike, path: Path, main_shape: str, dataset: str) -> None:
    write_bytes_atomic(path, render_markdown(doc, main_shape, dataset).encode())
