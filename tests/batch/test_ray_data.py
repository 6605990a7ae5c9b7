"""`upscale --ray` on a local Ray instance (issue 16): one actor is killed mid-run and the run still
completes with PNGs identical to the plain path's; bad files are named; reruns resume.

The private instance a run starts listens on loopback only and leaves no process behind: not
when the run ends, and not when it is killed (its guard stops the instance; if the guard is
killed too, the next run does). Those checks run the real command in a child process and look
at every process it started; they run first, before the module's own instance exists.

One Ray instance serves the other tests (starting Ray costs seconds on 2 cores), started the
way the command starts its own; the command uses a session its process already holds as it is.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from elan_deploy.batch.ray_instance import FOLDER_PREFIX, is_loopback, stop_abandoned, temp_root
from elan_deploy.cli import main
from tests.helpers import make_mixed_folder, snapshot

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

CLEANUP_S = 10.0  # a run's Ray processes must be gone this long after it ends or is killed


# -- the private instance of a run in a child process: loopback only, nothing left behind ------------


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _cmdline(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def _running(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those still running (a zombie has exited; a reused pid is another process)."""
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.Error:
            continue
    return alive


def _start_run(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "elan_deploy.cli", *args], stdout=out, stderr=subprocess.STDOUT)


def _instance_once_up(run: subprocess.Popen, log: Path, *titles: str) -> list[psutil.Process]:
    """The run and every process it started (its Ray instance, the guard), once processes with
    all these titles (e.g. a Ray Data actor's) exist."""
    deadline = time.monotonic() + 180
    while run.poll() is None and time.monotonic() < deadline:
        tree = _descendants(run.pid)
        if all(any(title in _cmdline(p) for p in tree) for title in titles):
            time.sleep(0.5)  # let their servers come up
            return [psutil.Process(run.pid), *_descendants(run.pid)]
        time.sleep(0.05)
    pytest.fail(f"no {titles} appeared (exit code {run.poll()}): {log.read_text(errors='replace')[-2000:]}")


def _listeners(processes: list[psutil.Process]) -> list[tuple[str, str, int]]:
    """(process name, ip, port) of every listening TCP socket of `processes`."""
    found = []
    for process in processes:
        try:
            name = process.name()
            found += [(name, c.laddr.ip, c.laddr.port) for c in process.net_connections(kind="inet")
                      if c.status == psutil.CONN_LISTEN]
        except psutil.Error:
            continue
    return found


def _wait_gone(processes: list[psutil.Process], seconds: float) -> list[psutil.Process]:
    deadline = time.monotonic() + seconds
    while (alive := _running(processes)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


def _describe(processes: list[psutil.Process]) -> list[str]:
    return [f"{p.pid} {_cmdline(p)[:80]}" for p in processes]


def _kill_all(runs: list[subprocess.Popen], processes: list[psutil.Process]) -> None:
    """After a failed check: nothing this test started may outlive it."""
    for run in runs:
        if run.poll() is None:
            run.kill()
            run.wait()
    for process in _running(processes):
        process.kill()
    stop_abandoned()  # the instance folders of the runs killed here


def _instance_folders(pid: int) -> list[Path]:
    return sorted(temp_root().glob(f"{FOLDER_PREFIX}{pid}-*"))


@pytest.fixture()
def long_folder(tmp_path, shared_data) -> Path:
    """Enough small photographs that a one-actor run is still busy when a test looks at it."""
    make_mixed_folder(tmp_path / "in", shared_data, corrupt=0, sizes=[(48, 56), (56, 48), (52, 52), (60, 44)] * 6)
    return tmp_path / "in"


def test_ray_run_listens_on_loopback_only_and_a_killed_run_leaves_no_process(long_folder, tmp_path, exported_onnx) -> None:
    args = ["upscale", str(long_folder), "-o", str(tmp_path / "out"), "--onnx", str(exported_onnx), "--ray", "--actors", "1"]
    run = _start_run(args, tmp_path / "run.log")
    instance: list[psutil.Process] = []
    try:
        instance += _instance_once_up(run, tmp_path / "run.log", "MapWorker")
        listeners = _listeners(instance)
        names = {name for name, _, _ in listeners}
        assert {"gcs_server", "raylet"} <= names and any(n.startswith("ray::") for n in names), f"not the Ray instance: {listeners}"
        exposed = [entry for entry in listeners if not is_loopback(entry[1])]
        assert not exposed, f"Ray processes listen beyond loopback: {exposed}"
        assert _instance_folders(run.pid), "the run's instance folder was not found"

        run.send_signal(signal.SIGKILL)
        run.wait(timeout=30)
        left = _wait_gone(instance, CLEANUP_S)
        assert not left, f"{CLEANUP_S:.0f} s after SIGKILL of the run these of its processes still run: {_describe(left)}"
        assert not _instance_folders(run.pid), "the killed run's instance folder was left behind"
    finally:
        _kill_all([run], instance)


@pytest.mark.slow  # ~65 s of Ray start-ups and kills; the loopback and plain-run checks stay in the default suite
def test_next_run_stops_what_a_run_killed_with_its_guard_left_and_a_terminated_run_leaves_nothing(long_folder, tmp_path, exported_onnx) -> None:
    args = ["upscale", str(long_folder), "-o", str(tmp_path / "out"), "--onnx", str(exported_onnx), "--ray", "--actors", "1"]
    first = _start_run(args, tmp_path / "first.log")
    runs, instance = [first], []
    seen: dict[int, list] = {}  # pid -> [process, its command line] for every process the next run started
    try:
        instance += _instance_once_up(first, tmp_path / "first.log", "ray::DashboardAgent", "ray::RuntimeEnvAgent")
        for guard in [p for p in instance if "elan_deploy.batch.ray_instance" in _cmdline(p)]:
            guard.kill()  # the guard first, so that nothing of this run can clean up
            assert not _wait_gone([guard], 10), "the guard survived SIGKILL"
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        time.sleep(1.0)
        assert _running(instance), "nothing was left to clean up: the test proves nothing"
        folders = _instance_folders(first.pid)

        second = _start_run(args, tmp_path / "second.log")
        runs.append(second)
        left_at_start: list[str] | None = None  # the killed run's processes once the next run's Ray is up
        deadline = time.monotonic() + 180
        while second.poll() is None and time.monotonic() < deadline:
            for process in _descendants(second.pid):
                entry = seen.setdefault(process.pid, [process, ""])
                entry[1] = _cmdline(process) or entry[1]  # a process read between fork and exec shows its parent's
            if left_at_start is None and any("raylet" in cmdline for _, cmdline in seen.values()):
                left_at_start = _describe(_running(instance))
            if any("MapWorker" in cmdline for _, cmdline in seen.values()):
                break
            time.sleep(0.05)
        assert left_at_start is not None, f"the next run's Ray did not start: {(tmp_path / 'second.log').read_text(errors='replace')[-2000:]}"
        assert not left_at_start, f"the next run started its Ray with the killed run's processes still running: {left_at_start}"
        assert not any(f.exists() for f in folders), "the next run left the killed run's instance folder"

        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=60) == 128 + signal.SIGTERM, (tmp_path / "second.log").read_text(errors="replace")[-2000:]
        processes = [process for process, _ in seen.values()]
        left = _wait_gone(processes, CLEANUP_S)
        assert not left, f"{CLEANUP_S:.0f} s after SIGTERM ended the run these of its processes still run: {_describe(left)}"
        assert not _instance_folders(second.pid), "the terminated run left its instance folder"
    finally:
        _kill_all(runs, instance + [process for process, _ in seen.values()])


# -- the module's own instance ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_session():
    """The private instance the command would start, here in the test process; when the module is
    done it must be stopped completely by the ordinary end of the block."""
    from elan_deploy.batch.ray_data import ray_session as tool_session

    before = {p.pid for p in _descendants(os.getpid())}  # e.g. a multiprocessing forkserver of an earlier test
    with tool_session(None) as session:
        yield session
        instance = [p for p in _descendants(os.getpid()) if p.pid not in before and "ray" in _cmdline(p)]  # Ray's and the guard
        folders = _instance_folders(os.getpid())
        assert instance and folders, "the module's Ray instance was not found"
    left = _wait_gone(instance, CLEANUP_S)
    assert not left, f"{CLEANUP_S:.0f} s after the Ray session ended these of its processes still run: {_describe(left)}"
    assert not any(f.exists() for f in folders), "the Ray session left its instance folder"


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


@pytest.mark.slow  # ~90 s: a Ray run with an actor killed mid-run
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
