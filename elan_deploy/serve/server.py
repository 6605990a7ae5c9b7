"""`elan-deploy serve`: one Triton model that runs the Upscaler, on PyTriton's bundled tritonserver.

PyTriton starts a real `tritonserver` (HTTP, gRPC, Prometheus metrics, health and readiness
endpoints, dynamic batching) whose Python backend hands each batch of requests to a callable in
this process. The callable holds one Upscaler, so every runtime and precision the toolkit builds
can be served, with the same padding and tiling as `elan-deploy upscale` and bounded memory.

Errors: Triton itself refuses requests whose dtype, rank or channel count do not match the model
config. Everything else is answered per request by `serve_model.py`, the Python-backend model
that wraps PyTriton's proxy: a bad request (zero-size, over `--max-pixels`) gets its own one-line
HTTP 400 / gRPC INVALID_ARGUMENT while the requests batched with it are served. PyTriton's
`PyTritonUnrecoverableError` would shut the server down, so it is never raised here.

Stopping (SIGINT/SIGTERM), bounded so that it ends within a container's grace period:
1. drain: the request being computed finishes; every other one, the rest of its batch and the
   requests queued behind it, is answered without being computed: HTTP 503 / gRPC UNAVAILABLE
   "server shutting down"; the model is unloaded (Triton waits for the running request) and the
   server reports not ready from the first moment;
2. once the model is unloaded, or a request is still running after `--drain-timeout` seconds,
   tritonserver is stopped, with a short exit timeout for clients that keep idle connections open.
The exit is clean (0) when the running request finished in time and tritonserver exited 0;
otherwise one line says what was cut off and the exit code is 1 (`WorkFailed`).
"""

from __future__ import annotations

import errno
import logging
import math
import os
import re
import signal
import socket
import sys
import sysconfig
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from elan_deploy import geometry
from elan_deploy.errors import ElanDeployError, RuntimeUnavailable, WorkFailed
from elan_deploy.serve.prepost import DEFAULT_MAX_PIXELS, check_images

INPUT = OUTPUT = "image"
DEFAULT_DRAIN_TIMEOUT_S = 10.0  # the running request gets this long after SIGTERM; Kubernetes sends SIGKILL after 30 s
STARTUP_TIMEOUT_S = 30  # PyTriton waits 120 s for a tritonserver that may have died at once
UNLOAD_S = 5  # finalizing the model after its last request (PyTriton's proxy, the stub process)
EXIT_TIMEOUT_S = 3  # tritonserver's wait for open client connections once the model is unloaded
STOP_BOUND_S = EXIT_TIMEOUT_S + 4  # tritonserver's exit and PyTriton's clean-up, after the drain
_HERE = Path(__file__).resolve().parent
GEOMETRY_FILE = Path(geometry.__file__)  # prepost.py's padding, shipped beside it


@dataclass(frozen=True)
class ServeOptions:
    """Where and how the model is exposed, and what it declares about its engine."""

    model_name: str
    host: str = "127.0.0.1"
    http_port: int = 8000  # Triton's own default ports
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_batch: int = 4
    max_pixels: int = DEFAULT_MAX_PIXELS
    queue_delay_us: int = 2000  # how long Triton waits to fill a batch of same-size requests
    drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S
    # engine facts (runtime, precision, precision_used, ...) published as `elan_deploy.*` model config
    # parameters, which `elan-deploy loadtest` reads back into its results
    declared: dict[str, str] = field(default_factory=dict)

    @property
    def ports(self) -> dict[str, int]:
        return {"--http-port": self.http_port, "--grpc-port": self.grpc_port, "--metrics-port": self.metrics_port}

    def check(self) -> None:
        ports = list(self.ports.values())
        if any(not 0 < p < 65536 for p in ports) or len(set(ports)) != 3:
            raise ElanDeployError(f"--http-port, --grpc-port and --metrics-port must be three different ports in 1..65535, got {ports}")
        if self.max_batch < 1 or self.max_pixels < 1:
            raise ElanDeployError("--max-batch and --max-pixels must be 1 or more")
        if not (math.isfinite(self.drain_timeout_s) and self.drain_timeout_s > 0):
            raise ElanDeployError(f"--drain-timeout must be a positive number of seconds, got {self.drain_timeout_s}")
        if not re.fullmatch(r"[A-Za-z0-9._-]+", self.model_name):
            raise ElanDeployError(f"model name '{self.model_name}' may contain only letters, digits, '.', '_' and '-'")

    def config_parameters(self, unloaded_flag: Path) -> dict[str, str]:
        """Model config parameters: the declared engine facts, the pixel limit, and where the model says it is unloaded."""
        declared = {f"elan_deploy.{key}": str(value) for key, value in self.declared.items()}
        return {**declared, "elan_deploy.max_pixels": str(self.max_pixels), "unloaded-flag": unloaded_flag.as_posix()}


def free_loopback_ports(count: int) -> list[int]:
    """`count` distinct TCP ports free on 127.0.0.1 now (the OS picks them), for tests and benchmarks."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def check_ports_free(host: str, ports: dict[str, int]) -> None:
    """Fail at once, naming the flag, when a port cannot be bound on `host`.

    tritonserver would find out only after PyTriton's start-up wait, with a traceback; and gRPC
    binds with SO_REUSEPORT, so a second server could silently share a port with the first.
    """
    for flag, port in ports.items():
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is no conflict
            try:
                probe.bind((host, port))
            except socket.gaierror:
                raise ElanDeployError(f"--host '{host}' is not an address of this machine; use e.g. 127.0.0.1 or 0.0.0.0") from None
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise ElanDeployError(f"port {port} on {host} is in use by another process; choose another with {flag}") from None
                if exc.errno == errno.EACCES:
                    raise ElanDeployError(f"port {port} needs privileges to listen on; choose one above 1023 with {flag}") from None
                raise ElanDeployError(f"cannot listen on {host}:{port} ({exc.strerror}); check --host and {flag}") from None


class UpscaleHandler:
    """The inference callable: a list of Triton requests -> a list of responses, in order.

    Each request's `image` is [N, H, W, 3] uint8; each image goes through `upscale_uint8`, which
    tiles large images so memory depends on the tile, not the image. `serve_model.py` checks the
    requests before they get here; the check is repeated so the callable never trusts its caller.

    Once `draining` is set, requests not yet started (the rest of the running batch, and every
    batch after it) are answered with an empty response, which `serve_model.py` turns into
    "server shutting down": a stop waits for one request, not for a whole batch.
    """

    def __init__(self, upscale_uint8: Callable[[np.ndarray], np.ndarray], max_pixels: int) -> None:
        self.upscale_uint8 = upscale_uint8
        self.max_pixels = max_pixels
        self.draining = threading.Event()
        self.busy = False  # a request is being computed (one model instance: one caller at a time)

    def __call__(self, requests):
        responses = []
        for request in requests:
            if self.draining.is_set():
                responses.append({})
                continue
            self.busy = True
            try:
                batch = check_images(request[INPUT], self.max_pixels)
                responses.append({OUTPUT: np.stack([self.upscale_uint8(image) for image in batch])})
            finally:
                self.busy = False
        return responses


def expose_interpreter_libpython() -> None:
    """Let the Python-backend stub load this interpreter's libpython.

    The stub links `libpythonX.Y.so`; the loader finds the system's copy first, which on a
    pyenv/conda/uv interpreter is another patch release than the standard library the stub then
    imports (e.g. Debian's 3.11.2 library with pyenv's 3.11.7 `multiprocessing`), and model
    loading fails. Putting the interpreter's LIBDIR first on LD_LIBRARY_PATH (inherited by
    tritonserver and the stub) pairs them again. Nothing changes for a system interpreter.
    """
    libdir, soname = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
    if not libdir or not soname or not (Path(libdir) / soname).is_file():
        return
    current = os.environ.get("LD_LIBRARY_PATH", "")
    if libdir not in current.split(":"):
        os.environ["LD_LIBRARY_PATH"] = f"{libdir}:{current}" if current else libdir


def _import_pytriton():
    """PyTriton's classes; also imports now what the drain needs, so a stop does not wait for imports."""
    try:
        import pytriton.client.auth  # noqa: F401 - used by drain()
        import pytriton.models.manager
        import pytriton.triton
        import tritonclient.http  # noqa: F401 - used by drain()
        from pytriton.client.warnings import NotSupportedTimeoutWarning
        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
        from pytriton.triton import Triton, TritonConfig
    except ImportError:
        raise RuntimeUnavailable("PyTriton is not installed; pip install 'elan-deploy[serve]'") from None
    # PyTriton waits this long for tritonserver to answer, also when it has already died (a port
    # taken between our check and its bind): keep a failed start short. Its client then warns that
    # its 60 s network timeout exceeds the wait, which is harmless.
    for module in (pytriton.triton, pytriton.models.manager):
        module.DEFAULT_TRITON_STARTUP_TIMEOUT_S = STARTUP_TIMEOUT_S
    warnings.filterwarnings("ignore", category=NotSupportedTimeoutWarning)
    return Triton, TritonConfig, ModelConfig, DynamicBatcher, Tensor


def _bind(triton, options: ServeOptions, handler: UpscaleHandler, model_config, inputs, outputs) -> Path:
    """`Triton.bind` with `serve_model.py` as the backend model and our config parameters.

    PyTriton 0.7's `bind` offers no hook for either, so its `Model` is subclassed and registered the
    way `bind` does it; the internals used are checked first, so another PyTriton fails in one line.
    Returns the file the model creates when Triton has unloaded it.
    """
    from pytriton.models.model import Model

    if not all(hasattr(triton, name) for name in ("_model_manager", "_workspace", "_triton_context", "_on_model_event")):
        raise RuntimeUnavailable("this PyTriton version is not supported by elan-deploy serve; pip install 'nvidia-pytriton~=0.7.0'")
    unloaded_flag = triton._workspace.path / "elan-deploy-unloaded"
    parameters = options.config_parameters(unloaded_flag)

    class ServeModel(Model):
        def get_model_config(self) -> dict:
            config = super().get_model_config()
            config.setdefault("parameters", {}).update({k: {"string_value": v} for k, v in parameters.items()})
            return config

        def get_proxy_model_files(self) -> dict[str, bytes]:
            files = super().get_proxy_model_files()
            prefix = f"file:{self.model_version}/"
            files[prefix + "pytriton_proxy_model.py"] = files.pop(prefix + "model.py")
            files[prefix + "model.py"] = (_HERE / "serve_model.py").read_bytes()
            files[prefix + "prepost.py"] = (_HERE / "prepost.py").read_bytes()
            files[prefix + "geometry.py"] = GEOMETRY_FILE.read_bytes()
            return files

    model = ServeModel(
        model_name=options.model_name, model_version=1, inference_fn=handler, inputs=inputs, outputs=outputs,
        config=model_config, workspace=triton._workspace, triton_context=triton._triton_context, strict=True,
    )
    model.on_model_event(triton._on_model_event)
    triton._model_manager.add_model(model, triton.is_connected())
    return unloaded_flag


class StopSignal:
    """SIGINT/SIGTERM set an event instead of raising, so shutdown runs on the main thread."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.received: str | None = None
        self.at: float | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignal:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, _frame) -> None:
        if self.received is None:
            self.received, self.at = signal.Signals(signum).name, time.monotonic()
        self.event.set()

    def __exit__(self, *_exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class TritonExit:
    """tritonserver's exit status, as PyTriton's process wrapper reports it."""

    def __init__(self, triton) -> None:
        self.event = threading.Event()
        self.success: bool | None = None
        self.code: int | None = None
        server = getattr(triton, "_triton_server", None)
        if server is not None:
            server.register_on_exit(self._record)

    def _record(self, success: bool, exit_code: int) -> None:
        self.success, self.code = bool(success), exit_code
        self.event.set()


def local_address(host: str, port: int) -> str:
    """host:port to reach a server listening on `host` from this machine."""
    if host in ("", "0.0.0.0"):
        return f"127.0.0.1:{port}"
    if host == "::":
        return f"[::1]:{port}"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def drain(triton, options: ServeOptions, handler: UpscaleHandler, unloaded_flag: Path, deadline: float) -> str | None:
    """Refuse new work and unload the model once the running request is done; None when that happened by `deadline`.

    Unloading first matters: tritonserver spends its exit timeout waiting for idle client
    connections, and a model still loaded when that runs out makes it abort ("exited with failure").
    Triton unloads a model once no request is left in it; the model then creates `unloaded_flag`.
    A request still computing at `deadline` is cut off; the unload itself gets `UNLOAD_S` more.
    """
    import tritonclient.http as httpclient
    from pytriton.client.auth import create_auth_headers

    handler.draining.set()
    client = httpclient.InferenceServerClient(local_address(options.host, options.http_port), network_timeout=5)
    try:
        client.unload_model(options.model_name, headers=create_auth_headers(triton.get_access_token(), "http"))
    except Exception as exc:  # noqa: BLE001 - tritonclient raises its own and socket errors
        return f"the model could not be unloaded ({' '.join(str(exc).split())[:200]})"
    finally:
        client.close()
    while not unloaded_flag.exists():
        now = time.monotonic()
        if now > deadline and handler.busy:
            return f"a request still running after --drain-timeout {options.drain_timeout_s:g} s was cut off"
        if now > deadline + UNLOAD_S:
            return f"the model did not unload within {UNLOAD_S} s of the drain"
        time.sleep(0.05)
    return None


def stop_triton(triton, bound_s: float) -> bool:
    """PyTriton's stop (tritonserver, model handlers, workspace) within `bound_s`; False when it did not end.

    PyTriton joins the thread that runs the inference callable, which may be in the middle of a
    long request when the drain was cut short: the stop then runs on in a daemon thread, and the
    process exits without it.
    """
    worker = threading.Thread(target=triton.stop, name="triton-stop", daemon=True)
    worker.start()
    worker.join(bound_s)
    return not worker.is_alive()


def serve(options: ServeOptions, handler: UpscaleHandler, announce: Callable[[str], None], poll_s: float = 0.5) -> int:
    """Start Triton with the handler bound as `options.model_name`; block until a signal; 0 on a clean stop.

    Returns 0 after SIGINT/SIGTERM when the running request finished within the drain timeout and
    tritonserver exited cleanly; raises WorkFailed otherwise, or when the server dies on its own.
    """
    options.check()
    check_ports_free(options.host, options.ports)
    Triton, TritonConfig, ModelConfig, DynamicBatcher, Tensor = _import_pytriton()
    expose_interpreter_libpython()
    # PyTriton logs every model event at INFO; keep the console to warnings and our own lines.
    logging.getLogger("pytriton").setLevel(logging.WARNING)
    config = TritonConfig(
        http_address=options.host, http_port=options.http_port,
        grpc_address=options.host, grpc_port=options.grpc_port,
        metrics_address=options.host, metrics_port=options.metrics_port,
        allow_metrics=True, allow_gpu_metrics=False, allow_cpu_metrics=True,
        exit_timeout_secs=EXIT_TIMEOUT_S, log_verbose=0,
    )
    problem: str | None = None
    with StopSignal() as stop:
        triton = Triton(config=config)
        exit_status: TritonExit | None = None
        stopped = False
        try:
            unloaded_flag = _bind(
                triton, options, handler,
                ModelConfig(max_batch_size=options.max_batch, batcher=DynamicBatcher(max_queue_delay_microseconds=options.queue_delay_us)),
                inputs=[Tensor(name=INPUT, dtype=np.uint8, shape=(-1, -1, 3))],
                outputs=[Tensor(name=OUTPUT, dtype=np.uint8, shape=(-1, -1, 3))],
            )
            try:
                triton.run()
            except Exception as exc:  # noqa: BLE001 - PyTriton raises TimeoutError, PyTritonError, tritonclient errors
                raise WorkFailed(f"Triton did not start: {' '.join(str(exc).split())[:300]}; see its log above") from None
            exit_status = TritonExit(triton)
            if not stop.event.is_set():
                announce(
                    f"serving '{options.model_name}': http://{options.host}:{options.http_port} "
                    f"grpc {options.host}:{options.grpc_port} metrics http://{options.host}:{options.metrics_port}/metrics "
                    f"(Ctrl+C or SIGTERM stops it, draining for up to {options.drain_timeout_s:g} s)"
                )
            while not stop.event.wait(poll_s):
                if not triton.is_alive():
                    raise WorkFailed("the Triton server stopped unexpectedly; see its log above")
            announce(f"{stop.received}: draining (the running request gets up to {options.drain_timeout_s:g} s, the others are refused)")
            problem = drain(triton, options, handler, unloaded_flag, stop.at + options.drain_timeout_s)
        finally:
            stopped = stop_triton(triton, STOP_BOUND_S)
        if not stopped:
            problem = problem or f"the Triton server did not stop within {STOP_BOUND_S} s"
            triton._workspace.clean()  # the last step of PyTriton's stuck stop: its folder (sockets, a tritonserver copy)
        elif problem is None and exit_status is not None and exit_status.event.wait(2) and not exit_status.success:
            problem = f"tritonserver exited with status {exit_status.code}"
    return _report_stop(f"stopped on {stop.received} after {time.monotonic() - stop.at:.1f} s", problem, stopped, announce)


def _report_stop(summary: str, problem: str | None, stopped: bool, announce: Callable[[str], None]) -> int:
    """0 after a clean stop; WorkFailed naming what was cut off; a bare exit when a thread is stuck in the engine."""
    if not stopped:
        # An inference thread is still inside the engine: finalizing the interpreter under it would
        # abort the process (C++ `terminate`), so this exit skips finalization.
        announce(f"error: {summary}, not cleanly: {problem}")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(WorkFailed.exit_code)
    if problem is not None:
        raise WorkFailed(f"{summary}, not cleanly: {problem}")
    announce(summary)
    return 0
