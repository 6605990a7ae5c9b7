"""Benchmark outputs: results.json (common schema), report.md, a latency-vs-PSNR plot and a
side-by-side crop for people who would rather look than read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from elan_deploy.bench.matrix import row_label
from elan_deploy.fileio import atomic_path, write_bytes_atomic


def _cells(rows: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        seen.setdefault(row_label(row), None)
    return list(seen)


def summary_rows(doc: dict[str, Any], main_shape: str, dataset: str) -> list[dict[str, Any]]:
    """One dict per cell: latency at the main shape, quality on one dataset, ratios to baselines."""
    rows = doc["rows"]
    latency = {row_label(r): r for r in rows if r.get("kind") == "latency" and r.get("shape") == main_shape}
    quality = {row_label(r): r for r in rows if r.get("kind") == "quality" and r.get("dataset") == dataset}
    base_eager = latency.get("torch fp32", {}).get("p50_ms")
    base_compile = latency.get("torch-compile bf16", {}).get("p50_ms")
    ref_psnr = quality.get("torch fp32", {}).get("psnr")
    out = []
    for label in _cells([r for r in rows if r.get("kind") in ("latency", "quality")]):
        lat, q = latency.get(label, {}), quality.get(label, {})
        p50 = lat.get("p50_ms")
        out.append({
            "cell": label,
            "used": lat.get("precision_used") or q.get("precision_used"),
            "threads": lat.get("threads") or q.get("threads"),
            "p50_ms": p50, "p90_ms": lat.get("p90_ms"), "p99_ms": lat.get("p99_ms"),
            "images_per_s": lat.get("images_per_s"), "output_mpix_per_s": lat.get("output_mpix_per_s"),
            "min_ms": lat.get("min_ms"), "engine_rss_mb": lat.get("engine_rss_mb"), "build_s": lat.get("build_s"), "engine_mb": lat.get("engine_mb"),
            "speedup_vs_eager": base_eager / p50 if p50 and base_eager else None,
            "speedup_vs_compile_bf16": base_compile / p50 if p50 and base_compile else None,
            "psnr": q.get("psnr"), "ssim": q.get("ssim"),
            "delta_db": q["psnr"] - ref_psnr if q.get("psnr") is not None and ref_psnr is not None else None,
            "fidelity_psnr": q.get("fidelity_psnr", lat.get("latency_input_fidelity_psnr")),
        })
    return out


BUSY_OTHER_CPU_PCT = 10.0
BUSY_STEAL_PCT = 5.0
UNSTEADY_ROUND_SPREAD_PCT = 25.0


def unsteady_machine_warning(doc: dict) -> str | None:
    """A one-line warning when the machine's speed moved while latency was timed, and why if known.

    Other processes and hypervisor steal are measured directly. A large spread between rounds with
    neither means the host itself changed speed (on shared VMs: other guests on the same cores,
    where the vCPUs are placed). Interleaved rounds make such a change land on every cell, so
    ratios within the run still hold while absolute figures move between runs.
    """
    latency = [r for r in doc["rows"] if r.get("kind") == "latency"]
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


def render_markdown(doc: dict[str, Any], main_shape: str, dataset: str) -> str:
    m = doc["machine"]
    parts = [
        f"# elan-deploy benchmark — {doc['rows'][0]['model'] if doc['rows'] else ''}",
        "",
        f"Machine: {m['cpu']}{f' ({cpu_id})' if (cpu_id := m.get('cpu_id')) else ''}, {m['cores']} cores ({', '.join(m.get('isa', [])) or 'no SIMD flags read'}); {m['os']}; "
        f"Python {m['python']}, torch {m['torch']}, elan-deploy {m['elan_deploy']}. Command: `{doc.get('command', 'elan-deploy bench')}`."
        + (f" Latency workers' malloc: {', '.join(allocators)}." if (allocators := sorted({str(r['allocator']) for r in doc['rows'] if 'allocator' in r})) else ""),
        "",
        *([f"**{warning}**", ""] if (warning := unsteady_machine_warning(doc)) else []),
        f"## Summary at {main_shape} (latency) and {dataset} (quality)",
        "",
        "Speed-ups are p50 ratios measured in this run. Δ dB is Y-PSNR against the torch FP32 row; fidelity is the PSNR "
        "of the engine's RGB output against the torch FP32 output (∞ = identical).",
        "",
    ]
    header = ["cell", "precision used", "threads", "min ms", "p50 ms", "p90 ms", "p99 ms", "img/s", "out MP/s", "engine RSS MB",
              "vs torch eager", "vs torch.compile bf16", f"{dataset} PSNR", "Δ dB", "SSIM", "fidelity dB", "build s"]
    body = [[
        s["cell"], _fmt(s["used"]), _fmt(s["threads"]), _fmt(s["min_ms"], 1), _fmt(s["p50_ms"], 1), _fmt(s["p90_ms"], 1),
        _fmt(s["p99_ms"], 1), _fmt(s["images_per_s"], 3), _fmt(s["output_mpix_per_s"], 3), _fmt(s["engine_rss_mb"], 0),
        _fmt(s["speedup_vs_eager"]) + ("×" if s["speedup_vs_eager"] else ""),
        _fmt(s["speedup_vs_compile_bf16"]) + ("×" if s["speedup_vs_compile_bf16"] else ""),
        _fmt(s["psnr"], 4), _fmt(s["delta_db"], 4), _fmt(s["ssim"], 4), _fmt(s["fidelity_psnr"]), _fmt(s["build_s"], 1),
    ] for s in summary_rows(doc, main_shape, dataset)]
    parts += [markdown_table(header, body), ""]

    quality = [r for r in doc["rows"] if r.get("kind") == "quality"]
    if quality:
        parts += ["## Quality per dataset (Y channel, border = scale)", ""]
        parts.append(markdown_table(
            ["cell", "dataset", "images", "PSNR", "SSIM", "fidelity dB"],
            [[row_label(r), r["dataset"], str(r["images"]), _fmt(r["psnr"], 4), _fmt(r["ssim"], 4), _fmt(r.get("fidelity_psnr"))] for r in quality],
        ))
        parts.append("")
    latency = [r for r in doc["rows"] if r.get("kind") == "latency"]
    if latency:
        parts += ["## Latency per shape", "", LATENCY_NOTE, ""]
        parts.append(markdown_table(
            ["cell", "shape", "engine shape", "iters × rounds", "min ms", "p50 ms", "p90 ms", "p99 ms", "max ms", "round spread %",
             "img/s", "out MP/s", "peak RSS MB", "engine RSS MB", "engine MB", "other CPU %", "steal %"],
            [[row_label(r), r["shape"], r["engine_shape"], f"{r['iterations']} × {r.get('rounds', 1)}", _fmt(r["min_ms"], 1),
              _fmt(r["p50_ms"], 1), _fmt(r["p90_ms"], 1), _fmt(r["p99_ms"], 1), _fmt(r["max_ms"], 1), _fmt(r.get("round_spread_pct"), 1),
              _fmt(r["images_per_s"], 3), _fmt(r["output_mpix_per_s"], 3), _fmt(r["peak_rss_mb"], 0), _fmt(r.get("engine_rss_mb"), 0),
              _fmt(r.get("engine_mb")), _fmt(r.get("other_cpu_pct"), 1), _fmt(r.get("steal_pct"), 1)] for r in latency],
        ))
        parts.append("")
    skipped = [r for r in doc["rows"] if r.get("kind") in ("skipped", "failed")]
    if skipped:
        parts += ["## Not run here", ""]
        parts.append(markdown_table(
            ["cell", "shape", "status", "reason"], [[row_label(r), r.get("shape", "all"), r["kind"], r["reason"]] for r in skipped],
        ))
        parts.append("")
    return "\n".join(parts)


LATENCY_NOTE = (
    "Each engine runs in its own process, static for its shape; the rounds of all engines at a shape are interleaved, so "
    "a slow spell of the machine lands on all of them. Round spread is (slowest − fastest round median) / p50. Peak RSS is "
    "the worker's high-water mark (Python and torch included); engine RSS is what loading and running the engine added. "
    "Other CPU % is machine CPU used by other processes while the shape was timed, steal % what the hypervisor took: "
    "above a few percent, treat the numbers as noisy."
)


def write_report(doc: dict[str, Any], path: Path, main_shape: str, dataset: str) -> None:
    write_bytes_atomic(path, render_markdown(doc, main_shape, dataset).encode())


def write_scatter(doc: dict[str, Any], path: Path, main_shape: str, dataset: str) -> str | None:
    """Latency-vs-PSNR scatter; returns why it was not drawn, if so."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed; pip install 'elan-deploy[plot]'"
    points = [s for s in summary_rows(doc, main_shape, dataset) if s["p50_ms"] and s["psnr"] is not None]
    if not points:
        return "no cell has both latency and quality"
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for s in points:
        ax.scatter(s["p50_ms"], s["psnr"], s=40)
        ax.annotate(s["cell"], (s["p50_ms"], s["psnr"]), textcoords="offset points", xytext=(5, 3), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel(f"p50 latency at {main_shape} (ms, log scale)")
    ax.set_ylabel(f"{dataset} Y-PSNR (dB)")
    ax.set_title(f"{doc['rows'][0]['model']}: latency vs quality — {doc['machine']['cpu']}")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return None


def write_crops(panels: list[tuple[str, np.ndarray]], path: Path, box: tuple[int, int, int]) -> None:
    """Side-by-side crops (each HxWx3 uint8 at HR size) with a caption strip under each."""
    from PIL import Image, ImageDraw

    top, left, size = box
    zoom = 3
    tiles = []
    for caption, image in panels:
        crop = Image.fromarray(image[top : top + size, left : left + size]).resize((size * zoom, size * zoom), Image.NEAREST)
        canvas = Image.new("RGB", (crop.width, crop.height + 22), "white")
        canvas.paste(crop, (0, 0))
        ImageDraw.Draw(canvas).text((4, crop.height + 5), caption, fill="black")
        tiles.append(canvas)
    strip = Image.new("RGB", (sum(t.width for t in tiles) + 6 * (len(tiles) - 1), tiles[0].height), "white")
    x = 0
    for tile in tiles:
        strip.paste(tile, (x, 0))
        x += tile.width + 6
    with atomic_path(path) as tmp:
        strip.save(tmp, format="PNG")
