"""A tiny `elan-deploy bench`: one shape, few iterations, a two-image Set5 subset."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from elan_deploy.bench.compare import find_regressions, host_drift_note, latency_changes, reference_cell, setting_differences
from elan_deploy.bench.latency import CpuLoad, LatencyConfig, LatencyStats
from elan_deploy.bench.report import unsteady_machine_warning
from elan_deploy.bench.worker import LatencyWorker, WorkerFailed, WorkerSpec
from elan_deploy.cli import main
from elan_deploy.results import SCHEMA_FILE

GLIBC = sys.platform == "linux" and platform.libc_ver()[0] == "glibc"


@pytest.fixture(scope="module")
def tiny_bench(shared_data: Path, exported_onnx: Path, tmp_path_factory) -> Path:
    subset = tmp_path_factory.mktemp("set5-subset")
    for name in ("bird.png", "head.png"):
        shutil.copy(shared_data / "Set5" / "HR" / name, subset / name)
    out = tmp_path_factory.mktemp("bench")
    args = ["bench", "--runtime", "torch,onnxruntime,tensorrt", "--precision", "fp32,fp16", "--shapes", "1x3x24x40",
            "--iters", "2", "--rounds", "2", "--time-budget", "0", "--dataset", str(subset), "--output", str(out), "--onnx", str(exported_onnx)]
    assert main(args) == 0
    return out


def test_results_validate_against_the_schema(tiny_bench: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    doc = json.loads((tiny_bench / "results.json").read_text())
    jsonschema.validate(doc, json.loads(SCHEMA_FILE.read_text()))
    kinds = {(r["runtime"], r["precision"], r["kind"]) for r in doc["rows"]}
    assert ("torch", "fp32", "quality") in kinds and ("onnxruntime", "fp16", "latency") in kinds
    assert ("tensorrt", "fp16", "skipped") in kinds  # listed with its reason, never dropped


def test_rows_carry_what_produced_them(tiny_bench: Path) -> None:
    doc = json.loads((tiny_bench / "results.json").read_text())
    latency = [r for r in doc["rows"] if r["kind"] == "latency"]
    assert all(r["shape"] == "1x3x24x40" and r["engine_shape"] == "1x3x32x48" for r in latency)
    assert all(r["threads"] and r["precision_used"] and r["runtime_version"] for r in latency)
    assert all(r["min_ms"] <= r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] <= r["max_ms"] for r in latency)
    assert all(r["rounds"] == 2 and r["iterations"] >= 2 and r["iterations"] % 2 == 0 for r in latency)  # rounds weigh alike
    assert all(0 <= r["engine_rss_mb"] < r["peak_rss_mb"] for r in latency)  # measured in the engine's own process
    assert all(r["allocator"] == ("keep" if GLIBC else "system (keep needs glibc)") for r in latency)
    quality = {(r["runtime"], r["precision"]): r for r in doc["rows"] if r["kind"] == "quality"}
    assert quality["onnxruntime", "fp32"]["fidelity_psnr"] >= 50
    assert abs(quality["onnxruntime", "fp32"]["psnr"] - quality["torch", "fp32"]["psnr"]) < 0.01
    skipped = next(r for r in doc["rows"] if r["kind"] == "skipped")
    assert "elan-deploy[tensorrt]" in skipped["reason"]


def test_report_and_pictures_are_written(tiny_bench: Path) -> None:
    report = (tiny_bench / "report.md").read_text()
    assert "onnxruntime fp16" in report and "Not run here" in report
    assert "Latency workers' malloc: keep" in report or not GLIBC
    for picture in ("latency_vs_psnr.png", "crops.png"):
        assert (tiny_bench / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _changed(doc: dict, p50_factor: float, psnr_delta_db: float = 0.0) -> dict:
    """A copy of a results document with every p50 scaled and every PSNR shifted."""
    changed = json.loads(json.dumps(doc))
    for row in changed["rows"]:
        if row["kind"] == "latency":
            row["p50_ms"] *= p50_factor
        if row["kind"] == "quality":
            row["psnr"] += psnr_delta_db
    return changed


def test_compare_flags_regressions(tiny_bench: Path) -> None:
    doc = json.loads((tiny_bench / "results.json").read_text())
    slower = _changed(doc, 1.5, -0.1)
    assert find_regressions(doc, doc) == []
    flagged = find_regressions(doc, slower)
    assert {r.what for r in flagged} == {"p50 ms", "PSNR dB"}


def test_compare_lists_every_latency_change(tiny_bench: Path) -> None:
    doc = json.loads((tiny_bench / "results.json").read_text())
    slower = _changed(doc, 1.05)
    changes = latency_changes(doc, slower)
    assert len(changes) == sum(r["kind"] == "latency" for r in doc["rows"])
    assert all(abs(c.change_pct - 5.0) < 1e-6 for c in changes)
    assert find_regressions(doc, slower) == []  # within the 10 % tolerance


def test_compare_tells_a_slower_machine_from_a_slower_engine(tiny_bench: Path) -> None:
    doc = json.loads((tiny_bench / "results.json").read_text())
    reference = reference_cell(doc, doc)
    assert reference == ("torch", "fp32")  # the tiny bench has no torch.compile row to prefer
    host_slower = latency_changes(doc, _changed(doc, 1.5))
    assert all(abs(c.change_pct - 50) < 1e-6 and abs(c.relative_change_pct) < 1e-6 for c in host_slower)
    assert "machine's speed changed" in host_drift_note(host_slower, reference)
    engine_slower = json.loads(json.dumps(doc))
    for row in engine_slower["rows"]:
        if row["kind"] == "latency" and row["runtime"] == "onnxruntime":
            row["p50_ms"] *= 1.5
    changes = {c.cell: c for c in latency_changes(doc, engine_slower)}
    assert abs(changes["onnxruntime fp32"].relative_change_pct - 50) < 1e-6
    assert abs(changes["torch fp32"].relative_change_pct) < 1e-6
    assert host_drift_note(list(changes.values()), reference) is None


def test_compare_command_reads_two_saved_runs(tiny_bench: Path, tmp_path: Path, capsys) -> None:
    results = tiny_bench / "results.json"
    slower = tmp_path / "slower.json"
    slower.write_text(json.dumps(_changed(json.loads(results.read_text()), 1.5)))
    assert main(["compare", str(results), str(results)]) == 0
    assert main(["compare", str(results), str(slower)]) == 1  # regressions exit 1, as bench --compare does
    assert "machine's speed changed" in capsys.readouterr().err
    assert main(["compare", str(results), str(tiny_bench / "report.md")]) == 2
    assert "cannot read NEW file" in capsys.readouterr().err
    assert main(["compare", str(results), str(tmp_path)]) == 2  # a folder, not a file


def test_bench_refuses_a_bad_compare_file_before_writing_anything(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["bench", "--quick", "--compare", str(tmp_path / "missing.json"), "--output", str(out)]) == 2
    assert "cannot read --compare file" in capsys.readouterr().err
    assert not out.exists()


def test_compare_names_settings_that_move_latency_by_themselves(tiny_bench: Path) -> None:
    doc = json.loads((tiny_bench / "results.json").read_text())
    assert setting_differences(doc, doc) == []
    other = json.loads(json.dumps(doc))
    other["machine"]["cpu"] = "another CPU"
    for row in other["rows"]:
        if row["kind"] == "latency":
            row["threads"], row["allocator"] = 1, "system"
    differences = setting_differences(doc, other)
    assert [d.split()[0] for d in differences] == ["cpu", "threads", "allocator"]
    assert differences[2].endswith("keep -> system") or "glibc" in differences[2]


_FAULTS_PER_MALLOC = """
import ctypes, resource, sys
from elan_deploy.bench.allocator import apply_allocator
print(apply_allocator(sys.argv[1]))
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
size = 48 * 2**20
faults = []
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(ctypes.c_void_p(block))
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sum(faults[1:]))
"""


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_keep_allocator_stops_large_blocks_faulting_in_again() -> None:
    """The reason for `--allocator keep`: with glibc's defaults a freed 48 MB block goes back to the OS."""
    faults = {}
    for allocator in ("system", "keep"):
        done = subprocess.run([sys.executable, "-c", _FAULTS_PER_MALLOC, allocator], capture_output=True, text=True, check=True)
        used, count = done.stdout.split()
        assert used == allocator
        faults[allocator] = int(count)
    assert faults["system"] > 3 * 48 * 2**20 // os.sysconf("SC_PAGE_SIZE") // 2  # every repeat faults its pages in again
    assert faults["keep"] < faults["system"] / 100


def test_round_budgets_keep_the_minimum_and_split_the_rest() -> None:
    assert LatencyConfig(min_iters=7, max_iters=7, rounds=5, time_budget_s=10).round_budget() == (2, 2, 2.0)
    assert LatencyConfig(min_iters=5, max_iters=50, rounds=5).round_budget() == (1, 10, 2.0)
    with pytest.raises(ValueError):
        LatencyConfig(rounds=0)
    with pytest.raises(ValueError):
        LatencyConfig(min_iters=10, max_iters=5)


def test_latency_stats_pool_rounds_and_report_their_spread() -> None:
    stats = LatencyStats.from_rounds([[0.10, 0.10, 0.10], [0.12, 0.12, 0.12]], (1, 3, 16, 16), scale=4)
    assert stats.iterations == 6 and stats.rounds == 2
    assert stats.min_ms == pytest.approx(100) and stats.max_ms == pytest.approx(120)
    assert stats.round_spread_pct == pytest.approx(100 * 20 / stats.p50_ms)
    assert stats.output_mpix_per_s == pytest.approx(64 * 64 / 1e6 / stats.mean_ms * 1e3)


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="CPU accounting reads Linux /proc")
def test_cpu_load_counts_unwatched_processes_as_other() -> None:
    start = time.perf_counter()
    load = CpuLoad()
    busy = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 1.5: pass"])
    busy.wait()
    elapsed = time.perf_counter() - start
    one_core_for_1_5_s = 100 * 1.5 / ((os.cpu_count() or 1) * elapsed)
    assert load.finish().other_pct >= 0.6 * one_core_for_1_5_s


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="CPU accounting reads Linux /proc")
def test_a_watched_process_that_dies_is_charged_up_to_its_last_sample() -> None:
    load = CpuLoad()
    busy = subprocess.Popen([sys.executable, "-c", "import time\nt = time.process_time()\nwhile time.process_time() - t < 1.0: pass"])
    load.watch(busy.pid)
    while busy.poll() is None:  # poll() reaps it: afterwards /proc no longer has the process
        load.sample()
        time.sleep(0.05)
    load.unwatch(busy.pid)
    assert load.watched_cpu_s >= 0.8  # not counted as another process's load


def test_a_worker_that_cannot_open_its_engine_reports_why(tmp_path: Path, bundled) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx file")
    spec = WorkerSpec(
        checkpoint=bundled.path, scale=4, runtime="onnxruntime", precision="fp32", shift="depthwise", attention="shared",
        shape=(1, 3, 16, 16), threads=1, cache_dir=tmp_path / "cache", onnx=broken, work_dir=None,
    )
    with pytest.raises(WorkerFailed) as failure:
        LatencyWorker(spec)
    assert failure.value.kind == "failed" and "model.onnx" in str(failure.value)  # the runtime's own error, not a timeout


def test_a_busy_or_unsteady_machine_is_called_out(tiny_bench: Path) -> None:
    doc = json.loads((tiny_bench / "results.json").read_text())
    if Path("/proc/stat").exists():
        assert all("other_cpu_pct" in r for r in doc["rows"] if r["kind"] == "latency")
    quiet = json.loads(json.dumps(doc))
    latency = [r for r in quiet["rows"] if r["kind"] == "latency"]
    for row in latency:
        row.update(other_cpu_pct=0.0, steal_pct=0.0, round_spread_pct=5.0)
    assert unsteady_machine_warning(quiet) is None
    for row in latency:
        row["round_spread_pct"] = 60.0
    assert "between rounds" in unsteady_machine_warning(quiet)
    latency[0]["other_cpu_pct"] = 40.0
    assert "busy" in unsteady_machine_warning(quiet)


def test_a_worker_that_dies_mid_run_is_reported_not_fatal(tmp_path: Path, bundled) -> None:
    spec = WorkerSpec(
        checkpoint=bundled.path, scale=4, runtime="torch", precision="fp32", shift="depthwise", attention="shared",
        shape=(1, 3, 16, 16), threads=1, cache_dir=tmp_path / "cache", onnx=None, work_dir=None,
    )
    worker = LatencyWorker(spec)
    assert worker.ready.first_output.shape == (1, 3, 64, 64)
    assert len(worker.run(0, 2, 2, 0.0)) == 2
    os.kill(worker.pid, 9)
    with pytest.raises(WorkerFailed, match="died"):
        worker.run(0, 1, 1, 0.0)


def test_no_cache_leaves_no_engine_behind(tmp_path: Path, exported_onnx: Path) -> None:
    command = [sys.executable, "-m", "elan_deploy.cli", "build", "--runtime", "onnxruntime", "--shapes", "1x3x16x16",
               "--onnx", str(exported_onnx), "--no-cache"]
    done = subprocess.run(command, env={**os.environ, "TMPDIR": str(tmp_path)}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "removed on exit" in done.stdout
    assert not list(tmp_path.glob("elan-deploy-*"))
