"""One process per engine for latency: isolated memory, isolated thread pools, interleaved rounds.

Timing every engine in the bench process would let one runtime's thread pool (OpenMP, TBB,
ONNX Runtime's spinning workers) and heap disturb the next, and would make "peak memory" the
sum of everything loaded so far. A worker process holds one engine at one shape; the parent
asks each worker in turn for a short round of timed runs, so slow drifts of a shared machine
land on every engine alike instead of on whichever happened to run last. Workers come from a
forkserver that has already imported torch, so starting one costs a fork, not an import.
"""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.connection
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np

from elan_deploy.bench.allocator import Allocator, apply_allocator
from elan_deploy.bench.latency import latency_image, natural_input, peak_rss_mb, reset_peak_rss, rss_mb
from elan_deploy.errors import ElanDeployError
from elan_deploy.runtimes import EngineInfo, EngineLoader


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs to open one engine; it pickles (the loader carries the model source)."""

    loader: EngineLoader  # static at `shape`; the parent built its engine into the shared cache
    allocator: Allocator = "keep"

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """The padded NCHW the engine is static for."""
        return self.loader.engine_shapes.opt


@dataclass(frozen=True)
class WorkerReady:
    open_s: float  # engine load plus the first call (torch.compile compiles here)
    first_output: np.ndarray
    info: EngineInfo
    rss_before_open_mb: float
    allocator: str  # what `apply_allocator` put in effect


class WorkerFailed(Exception):
    def __init__(self, kind: str, message: str, timed_out: bool = False) -> None:
        super().__init__(message)
        self.kind = kind  # "skipped" (an ElanDeployError: a known limit) or "failed" (a crash)
        self.timed_out = timed_out  # the worker was stopped for not answering in time


def _serve(conn: mp.connection.Connection, spec: WorkerSpec) -> None:
    allocator = apply_allocator(spec.allocator)
    reset_peak_rss()
    rss_before = rss_mb()
    t0 = time.perf_counter()
    engine = spec.loader.open()
    x = natural_input(spec.shape, latency_image())
    first = engine(x)
    conn.send(("ready", WorkerReady(time.perf_counter() - t0, first, engine.info, rss_before, allocator)))
    while True:
        command, *args = conn.recv()
        if command == "run":
            warmup, min_iters, max_iters, seconds = args
            for _ in range(warmup):
                engine(x)
            times: list[float] = []
            start = time.perf_counter()
            while len(times) < min_iters or (len(times) < max_iters and time.perf_counter() - start < seconds):
                t = time.perf_counter()
                engine(x)
                times.append(time.perf_counter() - t)
            conn.send(("times", times))
        elif command == "stop":
            conn.send(("peak", peak_rss_mb()))
            return


def worker_main(conn: mp.connection.Connection, spec: WorkerSpec) -> None:
    import rich

    rich.reconfigure(quiet=True)  # a worker answers through its pipe; library progress bars (NNCF) would only litter the log
    try:
        _serve(conn, spec)
    except ElanDeployError as exc:
        conn.send(("skipped", str(exc)))
    except BaseException as exc:  # report any crash to the parent rather than dying silently
        detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
        conn.send(("failed", detail[:300]))
    finally:
        conn.close()


def _context() -> mp.context.BaseContext:
    """A forkserver that has imported torch once; spawn on macOS, where forking such a process is unsafe."""
    if sys.platform != "darwin" and "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["elan_deploy.bench.worker", "elan_deploy.runtimes"])
        return ctx
    return mp.get_context("spawn")


class LatencyWorker:
    """The parent's handle on one worker process."""

    def __init__(self, spec: WorkerSpec, ready_timeout_s: float = 3600.0) -> None:
        self.spec = spec
        context = _context()
        self._conn, child = context.Pipe()
        self._process = context.Process(target=worker_main, args=(child, spec), daemon=True)
        self._process.start()
        child.close()
        self.pid = self._process.pid
        self.ready: WorkerReady = self._expect("ready", ready_timeout_s)

    def _expect(self, tag: str, timeout_s: float) -> Any:
        if not self._conn.poll(timeout_s):
            self.close()
            raise WorkerFailed("failed", f"latency worker gave no answer within {timeout_s:.0f} s", timed_out=True)
        try:
            got, payload = self._conn.recv()
        except (EOFError, OSError):
            self.close()
            raise self._died() from None
        if got in ("skipped", "failed"):
            self.close()
            raise WorkerFailed(got, payload)
        if got != tag:
            self.close()
            raise WorkerFailed("failed", f"latency worker answered '{got}' where '{tag}' was due")
        return payload

    def _send(self, *message: object) -> None:
        try:
            self._conn.send(message)
        except OSError:
            self.close()
            raise self._died() from None

    def _died(self) -> WorkerFailed:
        return WorkerFailed("failed", f"latency worker died (exit code {self._process.exitcode}); out of memory?")

    def run(self, warmup: int, min_iters: int, max_iters: int, seconds: float) -> list[float]:
        self._send("run", warmup, min_iters, max_iters, seconds)
        return self._expect("times", 3600.0)

    def stop(self) -> float:
        """Ends the worker; returns its peak RSS in MiB."""
        self._send("stop")
        peak = self._expect("peak", 60.0)
        self.close()
        return peak

    def close(self) -> None:
        self._conn.close()
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
