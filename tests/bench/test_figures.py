"""The report's pictures: readable labels, the Pareto front, every latency cell, crops that tell.

Figures are drawn from a fixed results document shaped like a real two-thread run on a Zen 5
machine (cells within 0.001 dB of each other, torch-compile rows with latency only).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from elan_deploy.bench.figures import (
    CropBox,
    CropSample,
    choose_crop,
    choose_crop_among,
    crop_engines,
    crop_figure,
    pareto_front,
    scatter_figure,
    write_crop_figure,
)
from elan_deploy.bench.report import render_markdown, write_crops, write_scatter
from elan_deploy.export.strategies import DEFAULT_WINDOWS

pytest.importorskip("matplotlib")

PNG = b"\x89PNG\r\n\x1a\n"
SHAPE = "1x3x180x320"
MACHINE = {
    "cpu": "AMD EPYC 9R45 96-Core Processor", "cpu_id": "family 26 model 2 stepping 1", "cores": 2,
    "isa": ["avx2", "avx512_bf16", "avx512f", "avx512_vnni"], "os": "Linux-6.8-x86_64", "python": "3.12.3",
    "elan_deploy": "0.1.0", "torch": "2.13.0", "numpy": "2.2.0", "torch_threads": 2,
}
# (runtime, precision, precision used, p50 ms, Set5 PSNR or None, fidelity dB)
CELLS = [
    ("torch", "fp32", "fp32", 2199.8, 32.4376, "inf"),
    ("torch", "bf16", "bf16", 1540.1, 32.4326, 57.05),
    ("torch-compile", "fp32", "fp32", 1347.6, None, 140.74),
    ("torch-compile", "bf16", "bf16", 759.8, None, 58.76),
    ("onnxruntime", "fp32", "fp32", 1094.3, 32.4376, 145.96),
    ("onnxruntime", "fp16", "fp16", 1110.0, 32.4374, 78.14),
    ("onnxruntime", "int8", "int8", 1745.5, 32.4175, 54.67),
    ("openvino", "fp32", "fp32", 1197.9, 32.4376, 139.43),
    ("openvino", "bf16", "bf16", 686.2, 32.4355, 57.03),
    ("openvino", "fp16", "bf16", 699.4, 32.4355, 57.03),
    ("openvino", "int8", "int8+bf16", 581.6, 32.4259, 52.63),
]


def _results_document() -> dict:
    rows = []
    for runtime, precision, used, p50, psnr, fidelity in CELLS:
        common = {"model": "ELAN-light-x4", "runtime": runtime, "precision": precision, "precision_used": used,
                  "runtime_version": "1.0", "threads": 2}
        if not runtime.startswith("torch"):  # the runner records the export form of every engine row
            common |= {"shift": "depthwise", "attention": "shared", "windows": DEFAULT_WINDOWS}
        for shape, factor in ((SHAPE, 1.0), ("1x3x64x64", 0.08)):
            rows.append({**common, "kind": "latency", "dataset": "", "images": 0, "shape": shape, "engine_shape": shape,
                         "iterations": 25, "rounds": 5, "min_ms": p50 * factor * 0.9, "p50_ms": p50 * factor,
                         "p90_ms": p50 * factor * 1.1, "p99_ms": p50 * factor * 1.2, "max_ms": p50 * factor * 1.3,
                         "images_per_s": 1000 / (p50 * factor), "output_mpix_per_s": 921.6 / (p50 * factor),
                         "round_spread_pct": 8.0, "peak_rss_mb": 600.0, "engine_rss_mb": 300.0, "allocator": "keep",
                         "latency_input_fidelity_psnr": fidelity})
        if psnr is not None:
            rows.append({**common, "kind": "quality", "dataset": "Set5", "images": 5, "psnr": psnr, "ssim": 0.8978,
                         "fidelity_psnr": fidelity})
    rows.append({"model": "ELAN-light-x4", "runtime": "tensorrt", "precision": "fp16", "dataset": "", "images": 0,
                 "kind": "skipped", "reason": "TensorRT is not installed; pip install 'elan-deploy[tensorrt]'"})
    return {"schema": "elan-deploy/results/1", "machine": MACHINE, "command": "elan-deploy bench", "rows": rows}


def test_latency_plot_keeps_every_label_apart_and_marks_the_front(tmp_path: Path) -> None:
    doc = _results_document()
    drawn = scatter_figure(doc, SHAPE, "Set5")
    assert not isinstance(drawn, str), drawn
    renderer = drawn.fig.canvas.get_renderer()
    every_cell = {f"{r} {p}" for r, p, *_ in CELLS}
    assert set(drawn.labels) == every_cell  # torch-compile included, at its latency
    assert set(drawn.strip) == {"torch-compile fp32", "torch-compile bf16"}
    assert drawn.front == ["openvino int8", "openvino bf16", "onnxruntime fp32"]

    boxes = {cell: text.get_window_extent(renderer) for cell, text in drawn.labels.items()}
    for (a, box_a), (b, box_b) in itertools.combinations(boxes.items(), 2):
        assert not box_a.overlaps(box_b), f"labels '{a}' and '{b}' overlap"
    for cell, (axes, x, y) in drawn.markers.items():
        px, py = axes.transData.transform((x, y))
        for other, box in boxes.items():
            assert not box.contains(px, py), f"label '{other}' covers the marker of '{cell}'"
        area = axes.get_window_extent(renderer)
        assert area.contains(*boxes[cell].p0) and area.contains(*boxes[cell].p1), f"label '{cell}' leaves its axes"

    texts = [t.get_text() for t in drawn.fig.texts] + [drawn.fig._suptitle.get_text()]
    assert any("AMD EPYC 9R45" in t and "avx512_bf16" in t for t in texts)  # the CPU and ISA
    assert "openvino fp16 (ran bf16)" in drawn.labels["openvino fp16"].get_text()
    assert "fidelity 58.8 dB" in drawn.labels["torch-compile bf16"].get_text()

    path = tmp_path / "latency_vs_psnr.png"
    assert write_scatter(doc, path, SHAPE, "Set5") is None
    assert path.read_bytes()[:8] == PNG


def test_crowded_cells_get_numbers_that_overlap_nothing() -> None:
    """`--strategies all` adds ten fp32 cells within 0.0002 dB and 25 % latency of each other."""
    doc = _results_document()
    rng = np.random.default_rng(3)
    for row in [r for r in doc["rows"] if r["runtime"] in ("onnxruntime", "openvino") and r["precision"] == "fp32"]:
        for shift, attention in (("roll", "shared"), ("gather", "shared"), ("depthwise", "sdpa"), ("roll", "sdpa"), ("gather", "sdpa")):
            extra = {**row, "shift": shift, "attention": attention}
            if row["kind"] == "latency":
                extra["p50_ms"] = row["p50_ms"] * float(rng.uniform(0.8, 1.25))
            else:
                extra["psnr"] = row["psnr"] - float(rng.choice([0.0, 0.0001, 0.0002]))
            doc["rows"].append(extra)
    drawn = scatter_figure(doc, SHAPE, "Set5")
    assert not isinstance(drawn, str), drawn
    renderer = drawn.fig.canvas.get_renderer()
    assert len(drawn.labels) == len(CELLS) + 10
    boxes = {cell: text.get_window_extent(renderer) for cell, text in drawn.labels.items()}
    for (a, box_a), (b, box_b) in itertools.combinations(boxes.items(), 2):
        assert not box_a.overlaps(box_b), f"labels '{a}' and '{b}' overlap"
    key = next((t.get_text() for t in drawn.fig.texts if t.get_text().startswith("Numbered cells")), "")
    for cell, number in drawn.key.items():  # each number on the plot is explained in the key
        assert drawn.labels[cell].get_text() == str(number) and f"{number}  {cell}" in key
    assert all(drawn.labels[c].get_text().startswith(c) for c in drawn.labels if c not in drawn.key)


def test_pareto_front_counts_gains_within_the_tie_as_none() -> None:
    points = [("a", 10.0, 30.0), ("b", 12.0, 30.0004), ("c", 15.0, 30.01), ("d", 20.0, 29.0), ("e", 10.0, 29.5)]
    assert pareto_front(points) == ["a", "c"]  # b buys 0.0004 dB: a tie; e is as fast as a but worse
    assert pareto_front(points, tie_db=0.0) == ["a", "b", "c"]


def test_crops_show_the_reduced_precision_cells_of_the_front_and_the_best_int8() -> None:
    doc = _results_document()
    assert crop_engines(doc, SHAPE, "Set5") == ["openvino int8", "openvino bf16"]  # onnxruntime fp32 is fp32
    doc["rows"] = [r for r in doc["rows"] if (r["runtime"], r["precision"]) != ("openvino", "int8")]
    assert crop_engines(doc, SHAPE, "Set5") == ["openvino bf16", "onnxruntime int8"]  # off the front, still the best INT8


def test_a_document_with_latency_only_still_draws(tmp_path: Path) -> None:
    doc = _results_document()
    doc["rows"] = [r for r in doc["rows"] if r["kind"] == "latency"]
    drawn = scatter_figure(doc, SHAPE, "Set5")
    assert not isinstance(drawn, str) and drawn.front == [] and len(drawn.strip) == len(CELLS)
    assert scatter_figure(doc, "1x3x8x8", "Set5") == "no cell has latency at 1x3x8x8"


def test_report_says_how_many_runs_were_timed() -> None:
    report = render_markdown(_results_document(), SHAPE, "Set5")
    assert "| timed runs |" in report and "25 in 5 rounds of 5" in report and "iters × rounds" not in report


def _textured(rng: np.random.Generator, size: int, amplitude: float) -> np.ndarray:
    """A patch of fine random texture around mid-grey."""
    return np.clip(128 + amplitude * rng.standard_normal((size, size, 1)), 0, 255).repeat(3, axis=2)


def _synthetic_hr(rng: np.random.Generator, patches: list[tuple[int, int, float]]) -> np.ndarray:
    """A smooth gradient with 40x40 patches of texture at (top, left) of the given amplitude."""
    yy, xx = np.mgrid[0:160, 0:200]
    image = np.repeat((60 + 0.4 * xx + 0.2 * yy)[..., None], 3, axis=2).astype(np.float64)
    for top, left, amplitude in patches:
        image[top : top + 40, left : left + 40] = _textured(rng, 40, amplitude)
    return image.round().astype(np.uint8)


def test_the_crop_is_the_highest_detail_patch() -> None:
    rng = np.random.default_rng(0)
    hr = _synthetic_hr(rng, [(100, 140, 60.0), (10, 20, 15.0)])  # strong texture bottom right, weak top left
    box = choose_crop(hr, size=40)
    assert abs(box.top - 100) <= 1 and abs(box.left - 140) <= 1, box
    # Across images: the one holding the strongest texture wins, wherever it is.
    weaker = _synthetic_hr(rng, [(0, 0, 30.0), (60, 60, 15.0)])
    index, box = choose_crop_among([weaker, hr], size=40)
    assert index == 1 and abs(box.top - 100) <= 1 and abs(box.left - 140) <= 1, (index, box)


def test_the_crop_prefers_detail_where_the_engine_differs() -> None:
    rng = np.random.default_rng(1)
    hr = np.full((120, 200, 3), 128, np.uint8)
    hr[40:80, 10:50] = _textured(rng, 40, 40.0).round().astype(np.uint8)
    hr[40:80, 150:190] = _textured(rng, 40, 40.0).round().astype(np.uint8)
    reference = hr.copy()
    engine = hr.copy()
    engine[40:80, 150:190] = np.clip(engine[40:80, 150:190].astype(int) + rng.integers(-6, 7, (40, 40, 3)), 0, 255)
    box = choose_crop(hr, size=40, outputs=[engine], reference=reference)
    assert abs(box.top - 40) <= 1 and abs(box.left - 150) <= 1, box


def test_crops_show_each_engine_and_its_amplified_error(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    hr = _synthetic_hr(rng, [(100, 140, 60.0), (10, 20, 15.0)])
    lr = hr[::4, ::4].copy()
    reference = hr.copy()
    int8 = np.clip(hr.astype(int) + rng.integers(-4, 5, hr.shape), 0, 255).astype(np.uint8)
    bf16 = np.clip(hr.astype(int) + rng.integers(-1, 2, hr.shape), 0, 255).astype(np.uint8)
    sample = CropSample("synthetic", hr, {"torch fp32": reference, "openvino int8": int8, "openvino bf16": bf16}, lr=lr)
    drawn = crop_figure([sample], 4, ["openvino int8", "openvino bf16"], size=40)
    assert not isinstance(drawn, str), drawn
    assert abs(drawn.box.top - 100) <= 1 and abs(drawn.box.left - 140) <= 1
    assert drawn.amplify == 32  # errors up to 4 levels: ×32 brings them near full scale
    titles = {a.get_title() for a in drawn.fig.axes}
    assert {"|openvino int8 − torch fp32| ×32", "|openvino bf16 − torch fp32| ×32", "bicubic", "HR"} <= titles

    path = tmp_path / "crops.png"
    assert write_crop_figure([sample], path, 4, ["openvino int8", "openvino bf16"], size=40) is None
    assert path.read_bytes()[:8] == PNG
    earlier = tmp_path / "crops-earlier-call.png"  # the earlier signature still works
    assert write_crops([("bicubic", hr), ("torch fp32", reference), ("openvino int8", int8), ("HR", hr)], earlier) is None
    assert earlier.read_bytes()[:8] == PNG


def test_a_fixed_box_is_kept() -> None:
    hr = np.full((64, 64, 3), 100, np.uint8)
    sample = CropSample("flat", hr, {"torch fp32": hr})
    drawn = crop_figure([sample], 4, [], box=CropBox(8, 16, 32))
    assert not isinstance(drawn, str) and drawn.box == CropBox(8, 16, 32) and drawn.engines == []
