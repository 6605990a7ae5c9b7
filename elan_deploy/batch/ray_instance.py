"""The private Ray instance of `upscale --ray`: loopback only, and never outliving its run.

Ray binds its servers to the node IP. `ray.init` turns a loopback `_node_ip_address` into the
machine's external address unless Ray runs in its single-machine mode, so the instance is
started in that mode (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, which Ray reads once at import, so
it is also set on the already imported module while `ray.init` runs): the node IP is then
127.0.0.1 and the GCS, the raylet, the workers, the driver and both agents listen there only.
The node IP is checked before the instance is used.

The instance lives in a private temporary folder (Ray's temp and session folder) that records
the owning run's pid. `ray.shutdown` stops what Ray can; Ray's agents outlive a run killed with
SIGKILL (they are children of the raylet, not fate-shared with the run, and may ignore SIGTERM).
So a guard process, started before Ray, waits for the run to close a pipe (at its end, or by
dying), then stops every process of the instance (SIGTERM, then SIGKILL) and removes the folder.
Should the guard be killed too, the next run finds the folder of a dead owner and does the same.
A process of the instance is a Ray process (a `ray::` title or a program from Ray's package)
that names the folder or holds a file open in it; no other process is ever signalled, nor the
run itself, nor anything of a cluster joined with `--ray-address`.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

try:
    import psutil
except ImportError:  # only the copy bundled with Ray is installed; importing Ray puts it on sys.path
    import ray  # noqa: F401
    import psutil

from elan_deploy.fileio import write_json_atomic

SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray's node IP is the loopback address
FOLDER_PREFIX = "elan-ray-"
OWNER_FILE = "owner.json"
TERM_GRACE_S = 2.0  # SIGTERM first, a chance to exit cleanly; then SIGKILL for what ignores it
GUARD_WAIT_S = 15.0


@dataclass(frozen=True)
class Owner:
    """The run that owns an instance: its pid, and its start time (pids are reused)."""

    pid: int
    started: float  # the process's create_time: a pid is reused, the pair is not

    @classmethod
    def this_process(cls) -> Owner:
        return cls(os.getpid(), psutil.Process().create_time())

    @classmethod
    def read(cls, folder: Path) -> Owner | None:
        try:
            data = json.loads((folder / OWNER_FILE).read_text(encoding="utf-8"))
            return cls(int(data["pid"]), float(data["started"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def alive(self) -> bool:
        try:
            process = psutil.Process(self.pid)
            return abs(process.create_time() - self.started) < 1.0 and process.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False
        except psutil.Error:  # cannot tell: leave its instance alone
            return True


def temp_root() -> Path:
    """Where Ray itself would put its sessions: $RAY_TMPDIR, else the temp folder (/tmp on macOS,
    whose per-user temp path is too long for Ray's Unix sockets)."""
    if env := os.environ.get("RAY_TMPDIR"):
        return Path(env)
    return Path("/tmp" if sys.platform == "darwin" else tempfile.gettempdir())


def _gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def _signal_all(processes: list[psutil.Process], sig: signal.Signals, wait_s: float) -> list[psutil.Process]:
    """Send `sig` to every process; the ones still running after `wait_s` seconds."""
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.send_signal(sig)
    deadline = time.monotonic() + wait_s
    alive = [p for p in processes if not _gone(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if not _gone(p)]
    return alive


def _ray_package() -> str:
    """Ray's package folder, where its daemons and scripts live ("\\0", matching nothing, without Ray)."""
    spec = importlib.util.find_spec("ray")
    return str(Path(spec.origin).parent) + os.sep if spec and spec.origin else "\0"


def _belongs(process: psutil.Process, folder_names: tuple[str, ...], ray_package: str) -> bool:
    """Whether `process` is a Ray process that names the folder or holds a file open in it.

    Both are needed: Ray's agents and workers replace their command line with a `ray::` title
    and show the folder only through their open log files.
    """
    cmdline = process.cmdline()
    if not cmdline or not (cmdline[0].startswith("ray::") or any(arg.startswith(ray_package) for arg in cmdline[:3])):
        return False
    if any(name in arg for arg in cmdline for name in folder_names):
        return True
    return any(f.path.startswith(folder_names) for f in process.open_files())


def instance_processes(folder: Path, owner_pid: int | None) -> list[psutil.Process]:
    """The running processes of the instance in `folder`, never its owner nor this process
    (other users' processes are unreadable: skipped)."""
    names = tuple({str(folder) + os.sep, str(folder.resolve()) + os.sep})
    ray_package = _ray_package()
    found = []
    for process in psutil.process_iter():
        if process.pid in (os.getpid(), owner_pid):
            continue
        with contextlib.suppress(psutil.Error):
            if not _gone(process) and _belongs(process, names, ray_package):
                found.append(process)
    return found


def stop_instance(folder: Path) -> None:
    """Stop every process of the instance in `folder`, then remove the folder."""
    owner = Owner.read(folder)
    processes = instance_processes(folder, owner.pid if owner else _owner_pid_from_name(folder))
    alive = _signal_all(processes, signal.SIGTERM, TERM_GRACE_S) if processes else []
    if alive:
        _signal_all(alive, signal.SIGKILL, TERM_GRACE_S)
    shutil.rmtree(folder, ignore_errors=True)


def _owner_pid_from_name(folder: Path) -> int | None:
    digits = folder.name[len(FOLDER_PREFIX) :].split("-", 1)[0]
    return int(digits) if digits.isdigit() else None


def _own_folder(folder: Path) -> bool:
    """A real folder of this user (another user's instance is not ours to stop)."""
    try:
        uid = getattr(os, "getuid", lambda: folder.stat().st_uid)()
        return folder.is_dir() and not folder.is_symlink() and folder.stat().st_uid == uid
    except OSError:
        return False


def stop_abandoned(root: Path | None = None) -> int:
    """Stop the instances whose run has died (killed with its guard); returns how many."""
    stopped = 0
    for folder in sorted((root or temp_root()).glob(f"{FOLDER_PREFIX}*")):
        if not _own_folder(folder):
            continue
        owner = Owner.read(folder)
        if owner is not None and owner.alive():
            continue
        pid = _owner_pid_from_name(folder)
        if owner is None and (pid is None or psutil.pid_exists(pid)):  # not ours, or its run is still writing owner.json
            continue
        stop_instance(folder)
        stopped += 1
    return stopped


def _start_guard(folder: Path) -> subprocess.Popen:
    """The guard: stops the instance once this process closes the pipe or dies."""
    return subprocess.Popen(
        [sys.executable, "-m", "elan_deploy.batch.ray_instance", str(folder)],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C or a kill of the run's process group leaves the guard to do its job
    )


def _close_guard(guard: subprocess.Popen, folder: Path) -> None:
    with contextlib.suppress(OSError):
        guard.stdin.close()  # type: ignore[union-attr]
    try:
        guard.wait(timeout=GUARD_WAIT_S)
    except subprocess.TimeoutExpired:
        guard.kill()
        guard.wait()
    if folder.exists():  # the guard failed or was killed: do its job here
        stop_instance(folder)


@contextlib.contextmanager
def _single_machine_mode() -> Iterator[None]:
    """While Ray starts: the loopback node IP, in this process and in every process Ray spawns."""
    constants = importlib.import_module("ray._private.ray_constants")
    saved_env = os.environ.get(SINGLE_MACHINE_ENV)
    saved_flag = constants.__dict__.get("ENABLE_RAY_CLUSTER")
    os.environ[SINGLE_MACHINE_ENV] = "0"
    constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(SINGLE_MACHINE_ENV, None)
        else:
            os.environ[SINGLE_MACHINE_ENV] = saved_env


def is_loopback(ip: str) -> bool:
    """127.0.0.1 or ::1, also written as an IPv4-mapped IPv6 address (::ffff:127.0.0.1)."""
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address) in ("127.0.0.1", "::1")


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _unwind_on_sigterm() -> None:
    """Ray's driver aborts the process on SIGTERM, leaving the instance to the guard; raise
    SystemExit instead, so that `finally` blocks stop the instance (Python handlers run in the
    main thread only)."""
    if _in_main_thread():
        signal.signal(signal.SIGTERM, _exit_on_signal)


@contextlib.contextmanager
def _sigterm_handler_kept() -> Iterator[None]:
    """Put the process's SIGTERM handler back after the block (`ray.init` and `_unwind_on_sigterm` replace it)."""
    previous = signal.getsignal(signal.SIGTERM) if _in_main_thread() else None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class NotLoopback(RuntimeError):
    """The instance's node IP is not loopback, so its servers would be reachable from the network."""

    def __init__(self, ip: str) -> None:
        super().__init__(f"its node address would be {ip}, not 127.0.0.1, so it would be reachable from the network; "
                         "start Ray yourself and pass --ray-address")
        self.ip = ip


@contextlib.contextmanager
def private_instance(ray: object, num_cpus: int, **init_args: object) -> Iterator[str]:
    """Start a loopback-only Ray instance for the block, and stop all of it after; yields its node IP.

    Raises `NotLoopback` (the instance is already stopped) when Ray would not bind to loopback.
    """
    stop_abandoned()
    owner = Owner.this_process()
    folder = Path(tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}{owner.pid}-", dir=temp_root()))
    write_json_atomic(folder / OWNER_FILE, asdict(owner))
    guard = _start_guard(folder)
    try:
        with _sigterm_handler_kept():
            try:
                with _single_machine_mode():
                    ray.init(num_cpus=num_cpus, include_dashboard=False, dashboard_host="127.0.0.1",  # type: ignore[attr-defined]
                             _temp_dir=str(folder), **init_args)
                _unwind_on_sigterm()
                node_ip = ray.util.get_node_ip_address()  # type: ignore[attr-defined]
                if not is_loopback(node_ip):
                    raise NotLoopback(node_ip)
                yield node_ip
            finally:
                if ray.is_initialized():  # type: ignore[attr-defined]
                    ray.shutdown()  # type: ignore[attr-defined]
    finally:
        _close_guard(guard, folder)


def guard_main(folder: Path) -> None:
    """Wait until the run closes our stdin (it finished, or died), then stop its instance."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        sys.stdin.buffer.read()
    stop_instance(folder)


if __name__ == "__main__":
    guard_main(Path(sys.argv[1]))
