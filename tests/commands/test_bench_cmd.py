"""`elan-deploy bench` end to end: the plan adapts to the CPU, --time-limit, progress lines, argument checks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from elan_deploy.cli import main
from elan_deploy.cpu import FLAGS_ENV, cpu_caps
from tests.helpers import X86


def test_bench_refuses_a_bad_compare_file_before_writing_anything(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["bench", "--quick", "--compare", str(tmp_path / "missing.json"), "--output", str(out)]) == 2
    assert "cannot read --compare file" in capsys.readouterr().err
    assert not out.exists()


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


def test_the_stress_set_goes_beside_a_benchmark_set(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["bench", "--runtime", "torch", "--precision", "fp32", "--dataset", "stress", "--output", str(out)]) == 2
    assert "--dataset stress goes beside a benchmark set: add --dataset Set5" in capsys.readouterr().err
    assert not out.exists()
