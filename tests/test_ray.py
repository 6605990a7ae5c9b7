"""`upscale --ray` on a local Ray instance (issue 16): one actor is killed mid-run and the run still
completes with PNGs identical to the plain path's; bad files are named; reruns resume.

One Ray instance serves the module (starting Ray costs seconds on 2 cores); the command uses a
session its process already holds as it is. It binds to 127.0.0.1 without a dashboard.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from elan_deploy.cli import main
from tests.batch_inputs import make_mixed_folder, snapshot

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")


@pytest.fixture(scope="module")
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             logging_level="WARNING", configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, shared_data, exported_onnx):
    """A dozen images of mixed sizes with two corrupt files, and the plain path's outputs."""
    root = tmp_path_factory.mktemp("ray")
    good = make_mixed_folder(root / "in", shared_data, corrupt=2)
    assert main(["upscale", str(root / "in"), "-o", str(root / "plain"), "--onnx", str(exported_onnx)]) == 1
    return root, good


def _map_workers() -> list[psutil.Process]:
    """The Ray Data actor processes of the Ray instance this test process started."""
    workers = []
    for process in psutil.Process().children(recursive=True):
        try:
            if process.status() != psutil.STATUS_ZOMBIE and "MapWorker" in " ".join(process.cmdline()):
                workers.append(process)
        except psutil.Error:  # exited meanwhile
            continue
    return workers


def _run_killing_one_actor(args: list[str], out: Path, total: int) -> tuple[int, int]:
    """Run the command in a thread; SIGKILL one actor once the first output exists. (exit code, pid)."""
    code: list[int] = []
    runner = threading.Thread(target=lambda: code.append(main(args)), daemon=True)
    runner.start()
    killed = 0
    deadline = time.monotonic() + 240
    while runner.is_alive() and time.monotonic() < deadline:
        done = len(list(out.glob("*.png"))) if out.is_dir() else 0
        workers = _map_workers() if done else []
        if workers:
            assert done < total, "the run finished before an actor could be killed"
            killed = workers[0].pid
            os.kill(killed, signal.SIGKILL)
            break
        time.sleep(0.02)
    runner.join(timeout=240)
    assert killed, "no Ray Data actor was found to kill"
    assert not runner.is_alive(), "the run did not finish after an actor was killed"
    return code[0], killed


def test_ray_survives_a_killed_actor_matches_plain_names_bad_files_and_resumes(ray_session, mixed, exported_onnx, capsys) -> None:
    root, good = mixed
    out = root / "ray"
    args = ["upscale", str(root / "in"), "-o", str(out), "--onnx", str(exported_onnx), "--ray", "--actors", "2"]
    capsys.readouterr()
    code, killed = _run_killing_one_actor(args, out, len(good))
    assert code == 1
    assert not psutil.pid_exists(killed) or psutil.Process(killed).status() == psutil.STATUS_ZOMBIE
    err = capsys.readouterr().err
    failed = sorted(line for line in err.splitlines() if line.startswith("failed: "))
    assert len(failed) == 2 and "broken_text.jpg" in failed[0] and "broken_truncated.png" in failed[1]
    assert f"{len(good)} done, 0 skipped (complete output exists), 2 failed" in err
    plain, ray_out = snapshot(root / "plain"), snapshot(out)
    assert sorted(ray_out) == sorted(plain) and len(plain) == len(good)
    assert all(ray_out[name][2] == plain[name][2] for name in plain), "Ray and plain PNGs differ"

    assert main(args) == 1
    assert f"0 done, {len(good)} skipped" in capsys.readouterr().err
    assert snapshot(out) == ray_out, "a rerun rewrote outputs"

    (out / "img07.png").unlink()
    assert main(args) == 1
    assert f"1 done, {len(good) - 1} skipped" in capsys.readouterr().err
    after = snapshot(out)
    assert {name for name in after if after[name][:2] != ray_out[name][:2]} == {"img07.png"}
    assert after["img07.png"][2] == plain["img07.png"][2]
