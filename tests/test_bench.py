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
        checkpoint=bundled.path, scale=4, runtime="onnxruntime", precision="fp32", shift="depthwise", attention="shared", windows="reshape",
        shape=(1, 3, 16, 16), threads=1, cache_dir=tmp_path / "cache", onnx=broken, work_dir=None,
    )
    with pytest.raises(WorkerFailed) as failure:
        LatencyWorker(spec)
    assert failure.value.kind == "failed" and not failure.value.timed_out
    assert "onnx" in str(failure.value).lower()  # the loader's own error about the file, not a timeout


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
        checkpoint=bundled.path, scale=4, runtime="torch", precision="fp32", shift="depthwise", attention="shared", windows="reshape",
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


# --- the plan adapts to the CPU, --time-limit, progress lines, argument checks -------------------------

from elan_deploy.bench.compare import best_cell, headline_reference  # noqa: E402
from elan_deploy.bench.matrix import Cell, build_matrix, plan_for_cpu  # noqa: E402
from elan_deploy.export.strategies import DEFAULT_WINDOWS, WINDOW_STRATEGIES  # noqa: E402
from elan_deploy.console import PlainProgress  # noqa: E402
from elan_deploy.cpu import FLAGS_ENV, CpuCaps, cpu_caps, parse_flags, precision_plan  # noqa: E402

AVX2 = CpuCaps(parse_flags("avx2 fma"))
ZEN4 = CpuCaps(parse_flags("avx2 avx512f avx512_vnni avx512_bf16"))
SAPPHIRE_RAPIDS = CpuCaps(parse_flags("avx2 avx512f avx512_vnni avx512_bf16 avx512_fp16 amx_tile amx_bf16 amx_int8"))
X86 = platform.machine().lower() in ("x86_64", "amd64")


def test_the_cpu_override_replaces_the_detected_flags(monkeypatch) -> None:
    monkeypatch.setenv(FLAGS_ENV, "AVX2, fma")
    caps = cpu_caps()
    assert caps.overridden and caps.flags == {"avx2", "fma"} and not caps.bf16
    assert "assumed from" in caps.describe()
    monkeypatch.delenv(FLAGS_ENV)
    assert not cpu_caps().overridden


@pytest.mark.skipif(not X86, reason="precision support is judged by x86 flags")
def test_openvino_precision_follows_its_cpu_plugin_rules() -> None:
    assert precision_plan("openvino", "bf16", AVX2).runs == "fp32"  # f32 when bf16 is asked on AVX2
    assert precision_plan("openvino", "fp16", ZEN4).runs == "bf16"  # the plugin's default where f16 is not native
    assert precision_plan("openvino", "fp16", SAPPHIRE_RAPIDS).runs == "fp16"
    assert precision_plan("openvino", "int8", AVX2).runs == "int8+fp32"
    assert not precision_plan("torch", "bf16", AVX2).native and precision_plan("torch", "bf16", ZEN4).native
    assert precision_plan("torch-compile", "fp32", AVX2).native


@pytest.mark.skipif(not X86, reason="precision support is judged by x86 flags")
def test_default_plan_on_avx2_skips_emulated_cells_with_their_reason() -> None:
    cells = build_matrix()
    skips = plan_for_cpu(cells, None, AVX2)
    assert {c.label for c in skips} == {"torch bf16", "torch-compile bf16", "openvino bf16", "openvino fp16"}
    assert all("not native here" in s.reason and "this CPU has AVX2 (avx2)" in s.reason and "--precision" in s.reason for s in skips.values())
    assert "openvino fp32 cell measures" in skips[Cell("openvino", "bf16")].reason
    named = plan_for_cpu(cells, ["bf16"], AVX2)  # asked for by name: they run
    assert {c.label for c in named} == {"openvino fp16"}


@pytest.mark.skipif(not X86, reason="precision support is judged by x86 flags")
def test_a_cell_that_would_run_another_cells_precision_is_a_duplicate() -> None:
    cells = build_matrix()
    skips = plan_for_cpu(cells, None, ZEN4)
    assert list(skips) == [Cell("openvino", "fp16")]
    assert skips[Cell("openvino", "fp16")].duplicate_of == "openvino bf16"
    assert plan_for_cpu(cells, None, SAPPHIRE_RAPIDS) == {}  # f16 is native there: nothing to leave out
    assert plan_for_cpu(cells, ["fp16", "bf16"], ZEN4) == {}
    # another window strategy is another engine, not a duplicate of the default one
    every = plan_for_cpu(build_matrix(strategies=True), None, ZEN4)
    other = Cell("openvino", "bf16", windows=next(w for w in WINDOW_STRATEGIES if w != DEFAULT_WINDOWS))
    assert other in build_matrix(strategies=True) and other not in every
    assert every[Cell("openvino", "fp16")].duplicate_of == "openvino bf16"


def test_the_headline_ratio_is_against_the_fastest_torch_compile_cell() -> None:
    def strategy(runtime: str) -> dict:  # what the runner records for an engine row
        return {} if runtime.startswith("torch") else {"shift": "depthwise", "attention": "shared", "windows": DEFAULT_WINDOWS}

    def latency(runtime: str, precision: str, p50: float, shape: str = "1x3x180x320") -> dict:
        return {"kind": "latency", "runtime": runtime, "precision": precision, "shape": shape, "p50_ms": p50} | strategy(runtime)

    doc = {"rows": [latency("torch", "fp32", 2000.0), latency("torch-compile", "fp32", 900.0), latency("torch-compile", "bf16", 1200.0),
                    latency("torch-compile", "bf16", 10.0, "1x3x64x64")]}
    assert headline_reference(doc, "1x3x180x320") == {
        "cell": "torch-compile fp32", "runtime": "torch-compile", "precision": "fp32", "shape": "1x3x180x320", "p50_ms": 900.0}
    assert reference_cell(doc, doc) == ("torch-compile", "fp32")
    quality = [{"kind": "quality", "runtime": r, "precision": p, "dataset": "Set5", "psnr": v} | strategy(r)
               for r, p, v in (("torch", "fp32", 32.44), ("openvino", "int8", 32.40), ("openvino", "bf16", 32.43))]
    doc["rows"] += quality + [latency("openvino", "int8", 300.0), latency("openvino", "bf16", 450.0)]
    best = best_cell(doc, "1x3x180x320", "Set5")
    assert best["cell"] == "openvino int8" and best["speedup_vs_reference"] == 3.0 and best["reference"] == "torch-compile fp32"
    assert best_cell(doc, "1x3x180x320", "Set5", budget_db=0.02)["cell"] == "openvino bf16"  # int8 is 0.04 dB down
    doc["rows"] = doc["rows"][:1]
    assert headline_reference(doc, "1x3x180x320") is None and reference_cell(doc, doc) == ("torch", "fp32")


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_plain_progress_prints_each_step_and_a_throttled_heartbeat(capsys) -> None:
    clock = _Clock()
    bar = PlainProgress(every_s=30, min_gap_s=1, clock=clock)  # no `with`: the ticker thread stays off, the clock is ours
    task = bar.add_task("bench", total=4)
    clock.now = 5
    bar.update(task, description="onnxruntime fp32: build")
    clock.now = 5.5
    bar.update(task, description="onnxruntime fp32: quality Set5")  # within the gap: held back
    for i in range(3):  # advancing without a new step prints nothing until the heartbeat is due
        clock.now = 10 + i
        bar.advance(task)
    clock.now = 75
    bar.update(task, description="onnxruntime fp32: quality Set5")
    bar.advance(task)
    bar.stop()
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "[0:00] bench  0/4 (0 %)",
        "[0:05] onnxruntime fp32: build  0/4 (0 %)",
        "[0:10] onnxruntime fp32: quality Set5  1/4 (25 %)",
        "[1:15] onnxruntime fp32: quality Set5  3/4 (75 %)",
        "[1:15] onnxruntime fp32: quality Set5  4/4 (100 %)  done",
    ]


@pytest.fixture(scope="module")
def one_image_set(shared_data: Path, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("set5-one")
    shutil.copy(shared_data / "Set5" / "HR" / "bird.png", folder / "bird.png")
    return folder


def _bench(args: list[str], out: Path, dataset: Path) -> list[str]:
    # one thread: on a loaded 2-core machine two OpenMP threads wait on each other at every op
    return ["bench", *args, "--shapes", "1x3x16x16", "--iters", "2", "--rounds", "2", "--time-budget", "0", "--threads", "1",
            "--dataset", str(dataset), "--output", str(out)]


def test_bench_on_a_masked_avx2_cpu_skips_bf16_and_logs_plain_progress(one_image_set: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv(FLAGS_ENV, "avx2")
    out = tmp_path / "out"
    assert main(_bench(["--runtime", "torch", "--time-limit", "600"], out, one_image_set)) == 0
    err = capsys.readouterr().err
    doc = json.loads((out / "results.json").read_text())
    rows = {(r["runtime"], r["precision"], r["kind"]): r for r in doc["rows"]}
    assert set(rows) == {("torch", "fp32", "quality"), ("torch", "fp32", "latency"), ("torch", "bf16", "skipped")}
    assert "emulates bf16" in rows["torch", "bf16", "skipped"]["reason"]
    assert doc["machine"]["isa_assumed"] == ["avx2"]
    assert "plan for AVX2 (avx2), assumed from $ELAN_DEPLOY_CPU_FLAGS: 1 of 2 cells run; left out on this CPU: torch bf16" in err
    steps = [line for line in err.splitlines() if line.startswith("[")]
    assert "\x1b[" not in err  # no terminal control codes in a log
    assert steps[0].startswith("[0:00] bench  0/4 (0 %)") and steps[-1].endswith("4/4 (100 %)  done")
    assert any("torch fp32: latency 1x3x16x16" in line for line in steps)


def test_time_limit_turns_cells_not_reached_into_skipped_rows(one_image_set: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(_bench(["--runtime", "torch,onnxruntime", "--precision", "fp32", "--time-limit", "0.001"], out, one_image_set)) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert {(r["runtime"], r["kind"]) for r in rows} == {("torch", "skipped"), ("onnxruntime", "skipped")}
    assert all(r["reason"] == "--time-limit 0.001 s reached before its quality" for r in rows)
    assert "Not run here" in (out / "report.md").read_text()


@pytest.mark.slow  # six OpenVINO builds: about a minute on a quiet 2-core machine
@pytest.mark.skipif(not X86, reason="precision support is judged by x86 flags")
def test_a_duplicate_the_flags_missed_is_caught_from_the_engines_report(
    one_image_set: Path, exported_onnx: Path, tmp_path: Path, monkeypatch,
) -> None:
    pytest.importorskip("openvino")
    if {"avx512_fp16", "amx_fp16"} & cpu_caps().flags:
        pytest.skip("OpenVINO runs f16 natively on this CPU: fp16 is no duplicate here")
    monkeypatch.setenv(FLAGS_ENV, "avx2 avx512f avx512_bf16 avx512_fp16")  # claims f16: the plan keeps openvino fp16
    out = tmp_path / "out"
    assert main(_bench(["--runtime", "openvino", "--quick", "--onnx", str(exported_onnx)], out, one_image_set)) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    fp16 = [r for r in rows if (r["runtime"], r["precision"]) == ("openvino", "fp16")]
    assert [r["kind"] for r in fp16] == ["quality", "skipped"]  # measured once for quality, not timed twice
    assert fp16[1]["duplicate_of"] in ("openvino fp32", "openvino bf16")
    assert f"reported {fp16[0]['precision_used']}" in fp16[1]["reason"]
    assert not any(r["kind"] == "latency" and r["precision"] == "fp16" for r in rows)


@pytest.mark.parametrize("flags, code", [
    (["--threads", "-3"], 2), (["--threads", "0"], 2), (["--bogus"], 2), (["--rounds", "0"], 2), (["--time-limit", "-5"], 2),
    (["--runtime", "tensorflow"], 2), (["--precision", "fp8"], 2), (["--shapes", "1x3x0x5"], 2), (["--dataset", "NoSuchSet"], 2),
])
def test_bad_arguments_exit_2_before_any_work_and_leave_no_folder(flags: list[str], code: int, tmp_path: Path) -> None:
    out = tmp_path / "new" / "out"
    try:
        got = main(["bench", *flags, "--output", str(out)])
    except SystemExit as exc:  # argparse's own checks
        got = exc.code
    assert got == code
    assert not (tmp_path / "new").exists()


def test_output_that_is_a_file_is_refused(tmp_path: Path) -> None:
    taken = tmp_path / "results"
    taken.write_text("mine")
    assert main(["bench", "--output", str(taken)]) == 2
    assert taken.read_text() == "mine"


def test_asking_only_for_what_cannot_run_exits_1(tmp_path: Path, shared_data: Path, capsys) -> None:
    from elan_deploy.runtimes import is_available

    if is_available("tensorrt") is None:
        pytest.skip("TensorRT runs here")
    out = tmp_path / "out"
    assert main(["bench", "--runtime", "tensorrt", "--output", str(out), "--data-root", str(shared_data)]) == 1
    assert "nothing it asked for can run here" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_torch_compile_baseline_matches_eager(bundled) -> None:
    """The frozen inductor graph computes the reference model (compiles for about a minute)."""
    import numpy as np

    from elan_deploy.runtimes import Precision
    from elan_deploy.runtimes.torch_rt import CompiledTorchEngine, TorchEngine

    x = np.tile(np.linspace(0, 255, 32, dtype=np.float32), (1, 3, 32, 1))
    eager = TorchEngine(bundled.model, Precision.FP32)(x)
    compiled = CompiledTorchEngine(bundled.model, Precision.FP32)(x)
    assert np.abs(compiled - eager).max() <= 1e-3 * np.abs(eager).max()


@pytest.mark.skipif(not X86, reason="precision support is judged by x86 flags")
def test_auto_precision_is_the_fastest_one_the_cpu_runs_natively() -> None:
    from elan_deploy.cpu import fastest_native_precision

    assert [fastest_native_precision("openvino", caps) for caps in (AVX2, ZEN4, SAPPHIRE_RAPIDS)] == ["fp32", "bf16", "bf16"]
    assert [fastest_native_precision("torch-compile", caps) for caps in (AVX2, ZEN4)] == ["fp32", "bf16"]
    assert fastest_native_precision("onnxruntime", SAPPHIRE_RAPIDS) == "fp32"
    assert fastest_native_precision("tensorrt", AVX2) == "fp16"
