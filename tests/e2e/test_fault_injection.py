"""Crash safety, proven with real processes: kill a command with SIGKILL where it hurts most
(just before an artifact is renamed into place, or mid-build), rerun it, and check that the
rerun succeeds, trusts nothing half-written, leaves nothing stale, and writes what an
uninterrupted run writes. Also: concurrent builds of one engine, and a full disk.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from elan_deploy.fileio import TMP_MARK
from elan_deploy.runtimes.cache import entry_is_intact
from tests.helpers import message_lines, natural_crop

SMALL = "1x3x32x32"
TIMEOUT = 300


def run(args: Sequence[str], cache: Path, *, kill_at: str | None = None, log: Path | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ELAN_DEPLOY_")}
    env["ELAN_DEPLOY_CACHE"] = str(cache)
    if kill_at:
        env["ELAN_DEPLOY_KILL_AT"] = kill_at
    if log:
        env["ELAN_DEPLOY_FAULT_LOG"] = str(log)
    return subprocess.run(
        [sys.executable, "-m", "elan_deploy.cli", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT
    )


def killed(result: subprocess.CompletedProcess) -> bool:
    return result.returncode == -signal.SIGKILL


def temporaries(*folders: Path) -> list[Path]:
    return [p for folder in folders if folder.exists() for p in folder.rglob("*") if TMP_MARK in p.name]


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix != ".lock"}


def engine_entries(cache: Path, runtime: str) -> list[Path]:
    folder = cache / "engines" / runtime
    return [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")] if folder.exists() else []


def test_export_killed_before_publish_then_rerun(exported_onnx, tmp_path) -> None:
    out = tmp_path / "out" / "model.onnx"
    out.parent.mkdir()
    args = ["export", "--output", str(out)]
    first = run(args, tmp_path / "cache", kill_at="publish:model.onnx")
    assert killed(first), first.stderr
    assert not out.exists()  # nothing half-written under the real name
    rerun = run(args, tmp_path / "cache")
    assert rerun.returncode == 0, rerun.stderr
    assert out.read_bytes() == exported_onnx.read_bytes()  # what an uninterrupted export writes
    assert temporaries(out.parent) == []  # the killed run's temporary was cleaned up


def seed_export(cache: Path, bundled, exported_onnx: Path) -> None:
    """Put the verified export where a first build would have left it (saves an export per run)."""
    from elan_deploy.fileio import write_bytes_atomic
    from elan_deploy.model.checkpoint import file_sha256
    from elan_deploy.runtimes import ModelSource

    source = ModelSource(bundled, work_dir=cache / "onnx")
    path = cache / "onnx" / f"{source.model_id}-{source.fingerprint()[:16]}.fp32.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(exported_onnx.read_bytes())
    write_bytes_atomic(path.with_name(path.name + ".sha256"), file_sha256(path).encode())


@pytest.mark.parametrize(
    ("runtime", "precision", "kill_at"),
    [
        pytest.param("onnxruntime", "fp16", "build:onnxruntime", marks=pytest.mark.slow),  # mid-build
        ("openvino", "fp32", "publish:????????????????????????"),  # the engine entry, just before it lands
    ],
)
def test_build_killed_then_rerun(runtime, precision, kill_at, bundled, exported_onnx, tmp_path) -> None:
    pytest.importorskip(runtime)
    cache = tmp_path / "cache"
    seed_export(cache, bundled, exported_onnx)  # killing the export itself: test_export_killed_before_publish_then_rerun
    seed_export(tmp_path / "clean-cache", bundled, exported_onnx)
    args = ["build", "--runtime", runtime, "--precision", precision, "--shapes", SMALL]
    first = run(args, cache, kill_at=kill_at)
    assert killed(first), first.stderr
    assert all(entry_is_intact(e) for e in engine_entries(cache, runtime))  # nothing half-published
    rerun = run(args, cache)
    assert rerun.returncode == 0, rerun.stderr
    entries = engine_entries(cache, runtime)
    assert len(entries) == 1 and entry_is_intact(entries[0])
    assert temporaries(cache) == []
    reference = run(args, tmp_path / "clean-cache")
    assert reference.returncode == 0, reference.stderr
    clean = engine_entries(tmp_path / "clean-cache", runtime)[0]
    assert files(entries[0]) == files(clean)  # byte-identical to an uninterrupted build


@pytest.mark.slow  # ~60 s of Core ML conversion; the ONNX Runtime and OpenVINO builds are killed in the default suite
def test_coreml_conversion_killed_then_rerun(tmp_path) -> None:
    pytest.importorskip("coremltools")
    cache = tmp_path / "cache"
    out = tmp_path / "ml"
    args = ["build", "--runtime", "coreml", "--precision", "fp16", "--shapes", SMALL, "--output", str(out)]
    first = run(args, cache, kill_at="publish:ml")  # after conversion, before the copy lands
    assert killed(first), first.stderr
    assert not out.exists()
    rerun = run(args, cache)
    assert rerun.returncode == 0, rerun.stderr
    assert list(out.glob("*.mlpackage")) and temporaries(cache, tmp_path) == []


def test_upscale_folder_killed_mid_run_then_rerun(shared_data, tmp_path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i, (top, left) in enumerate([(0, 0), (40, 60), (100, 20), (200, 150)]):
        Image.fromarray(natural_crop(shared_data, 24, 28, top=top, left=left).astype(np.uint8)).save(inputs / f"img{i}.png")
    cache = tmp_path / "cache"
    # an explicit engine: `auto` would build (and calibrate) OpenVINO INT8 on CPUs with AVX-512 BF16
    engine = ["--runtime", "onnxruntime", "--precision", "fp32"]
    args = ["upscale", str(inputs), "-o", str(tmp_path / "out"), "--shapes", SMALL, *engine]
    first = run(args, cache, kill_at="publish:*.png@3")  # two images written, the third about to land
    assert killed(first), first.stderr
    landed = [p.name for p in (tmp_path / "out").glob("*.png") if not p.name.startswith(".")]
    assert len(landed) == 2, landed  # the third is only a temporary, which the rerun removes
    rerun = run(args, cache)
    assert rerun.returncode == 0, rerun.stderr
    reference = run(["upscale", str(inputs), "-o", str(tmp_path / "ref"), "--shapes", SMALL, *engine], cache)
    assert reference.returncode == 0, reference.stderr
    assert files(tmp_path / "out") == files(tmp_path / "ref")
    assert temporaries(tmp_path) == []


@pytest.mark.slow
def test_quantize_killed_then_rerun(tmp_path) -> None:
    cache = tmp_path / "cache"
    out = tmp_path / "m.int8.onnx"
    args = ["quantize", "--patches", "8", "--output", str(out)]
    first = run(args, cache, kill_at="publish:m.int8.onnx")
    assert killed(first), first.stderr
    assert not out.exists()
    rerun = run(args, cache)
    assert rerun.returncode == 0, rerun.stderr
    assert temporaries(cache, tmp_path) == []


@pytest.mark.parametrize("processes", [2, 4])
def test_concurrent_builds_of_one_engine_build_once(processes, exported_onnx, tmp_path) -> None:
    cache, log = tmp_path / "cache", tmp_path / "points.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ELAN_DEPLOY_")}
    env.update(ELAN_DEPLOY_CACHE=str(cache), ELAN_DEPLOY_FAULT_LOG=str(log))
    args = [sys.executable, "-m", "elan_deploy.cli", "build", "--runtime", "onnxruntime", "--precision", "fp16", "--onnx", str(exported_onnx), "--shapes", SMALL]
    procs = [subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(processes)]
    outcomes = [p.communicate(timeout=TIMEOUT) for p in procs]
    assert [p.returncode for p in procs] == [0] * processes, [err for _, err in outcomes]
    builds = [line for line in log.read_text().splitlines() if line.endswith("build:onnxruntime")]
    assert len(builds) == 1
    entries = engine_entries(cache, "onnxruntime")
    assert len(entries) == 1 and entry_is_intact(entries[0]) and temporaries(cache) == []


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs: room for the model, not for an export plus an engine."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_disk_full_is_a_one_line_error_and_leaves_nothing_half_written(runtime, small_disk, exported_onnx) -> None:
    pytest.importorskip(runtime)
    (small_disk / "filler").write_bytes(b"\0" * 1_500_000)
    args = ["build", "--runtime", runtime, "--onnx", str(exported_onnx), "--shapes", SMALL, "--output", str(small_disk / "engine")]
    result = run(args, small_disk / "cache")
    errors = message_lines(result.stderr)  # the build step's progress lines aside
    assert result.returncode == 1, result.stderr
    assert len(errors) == 1 and "no space left" in errors[0], result.stderr
    assert any(line.endswith("engine (first use of these settings; cached after)  stopped") for line in result.stderr.splitlines()), result.stderr
    assert temporaries(small_disk) == [] and not (small_disk / "engine").exists()
    assert all(entry_is_intact(e) for e in engine_entries(small_disk / "cache", runtime))


def test_upscale_truncated_video_fails_whole_unless_allow_partial(shared_data, exported_onnx, tmp_path) -> None:
    """A clip cut in half (what an interrupted copy or download leaves) is a failure: exit 1,
    nothing at the destination, no temporary. --allow-partial writes what decodes and says what
    is missing against what the container declares."""
    av = pytest.importorskip("av")
    from tests.helpers import make_clip

    full, cut = tmp_path / "full.mkv", tmp_path / "cut.mkv"
    make_clip(full, shared_data, frames=12, size=(32, 32))
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    out = tmp_path / "cut_x4.mkv"
    # any engine decodes the same frames; ONNX Runtime FP32 builds in seconds where `--runtime auto` may calibrate INT8
    args = ["upscale", str(cut), "-o", str(out), "--onnx", str(exported_onnx), "--runtime", "onnxruntime", "--precision", "fp32"]
    failed = run(args, tmp_path / "cache")
    assert failed.returncode == 1, failed.stderr
    assert not out.exists() and temporaries(tmp_path) == []
    assert "of ~12 frames" in failed.stderr and str(out) not in failed.stderr, failed.stderr
    partial = run([*args, "--allow-partial"], tmp_path / "cache")
    assert partial.returncode == 0, partial.stderr
    with av.open(str(out)) as container:
        written = sum(1 for _ in container.decode(video=0))
    assert 0 < written < 12
    assert f"warning: 'cut.mkv' is truncated or damaged: decoded {written} of ~12 frames" in partial.stderr, partial.stderr
    assert temporaries(tmp_path) == []


def _call_serve(port: int, batch: np.ndarray):
    """One HTTP request to `elan-deploy serve`: the output array, or the exception the client raised."""
    import tritonclient.http as httpclient

    from tests.helpers import MODEL

    client = httpclient.InferenceServerClient(f"127.0.0.1:{port}", connection_timeout=300, network_timeout=300)
    try:
        tensor = httpclient.InferInput("image", list(batch.shape), "UINT8")
        tensor.set_data_from_numpy(batch)
        return client.infer(MODEL, [tensor]).as_numpy("image")
    except Exception as exc:  # noqa: BLE001 - refusals and dropped connections are what the tests count
        return exc
    finally:
        client.close()


def _sigterm_with_requests_in_flight(server: dict, batches: list[np.ndarray], after_s: float) -> tuple[int, float, list]:
    """Send every batch at once, SIGTERM `serve` `after_s` later: (exit code, seconds from signal to exit, outcomes)."""
    import threading
    import time

    outcomes: list = [None] * len(batches)

    def call(i: int) -> None:
        outcomes[i] = _call_serve(server["http"], batches[i])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(batches))]
    for thread in threads:
        thread.start()
    time.sleep(after_s)
    signalled = time.monotonic()
    server["proc"].send_signal(signal.SIGTERM)
    code = server["proc"].wait(TIMEOUT)
    took = time.monotonic() - signalled
    for thread in threads:
        thread.join(60)
    return code, took, outcomes


def test_serve_sigterm_under_load_answers_the_running_request_and_refuses_the_queued(exported_onnx, tmp_path) -> None:
    """SIGTERM with 6 requests in flight: the request being computed is answered, the other 5 (the rest of
    its batch and the queue) get HTTP 503 "server shutting down" at once, none is dropped, and serve exits 0."""
    pytest.importorskip("pytriton")
    pytest.importorskip("tritonclient.http")
    from tritonclient.utils import InferenceServerException

    from tests.helpers import assert_nothing_left, running_serve

    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 256, (1, 160, 160, 3), dtype=np.uint8) for _ in range(6)]
    flags = ("--max-pixels", str(160 * 160), "--drain-timeout", "60")  # a generous drain: slow CI machines finish too
    with running_serve(exported_onnx, tmp_path / "serve.log", *flags) as server:
        code, took, outcomes = _sigterm_with_requests_in_flight(server, batches, after_s=1.0)
        log = server["log"].read_text()
    answered = [o for o in outcomes if isinstance(o, np.ndarray)]
    refused = [o for o in outcomes if isinstance(o, InferenceServerException) and o.status() == "503"]
    assert code == 0, log[-3000:]
    assert len(answered) + len(refused) == len(batches), outcomes  # nothing dropped ("connection closed")
    assert answered and refused, outcomes
    assert all(out.shape == (1, 640, 640, 3) and out.dtype == np.uint8 for out in answered)
    assert all("server shutting down" in err.message() and "\n" not in err.message() for err in refused)
    assert took < 60, f"{took:.1f} s from SIGTERM to exit"
    assert "stopped on SIGTERM after" in log
    assert_nothing_left(server["children"])
    assert not server["workspace"].exists()  # PyTriton's folder (sockets, a copy of tritonserver) is removed


def test_serve_sigterm_cuts_off_a_request_longer_than_the_drain_and_exits_1(exported_onnx, tmp_path) -> None:
    """A request still running when --drain-timeout ends is cut off; serve says so in one line and exits 1."""
    pytest.importorskip("pytriton")
    pytest.importorskip("tritonclient.http")
    from tests.helpers import assert_nothing_left, running_serve

    big = np.random.default_rng(1).integers(0, 256, (1, 512, 512, 3), dtype=np.uint8)  # seconds of work on any CPU
    with running_serve(exported_onnx, tmp_path / "serve.log", "--max-pixels", str(512 * 512), "--drain-timeout", "1") as server:
        code, took, outcomes = _sigterm_with_requests_in_flight(server, [big], after_s=1.0)
        log = server["log"].read_text()
    assert code == 1, log[-3000:]
    assert not isinstance(outcomes[0], np.ndarray)
    assert "not cleanly: a request still running after --drain-timeout 1 s was cut off" in log, log[-3000:]
    assert took < 20, f"{took:.1f} s from SIGTERM to exit"  # the drain (1 s) and the bounded stop of tritonserver
    assert_nothing_left(server["children"])
    assert not server["workspace"].exists()  # removed also when the stop could not wait for the engine
