"""`elan-deploy serve`: one Triton model that runs the Upscaler, on PyTriton's bundled tritonserver.

PyTriton starts a real `tritonserver` (HTTP, gRPC, Prometheus metrics, health and readiness
endpoints, dynamic batching) whose Python backend hands each batch of requests to a callable in
this process. The callable holds one Upscaler, so every runtime and precision the toolkit builds
can be served, with the same padding and tiling as `elan-deploy upscale` and bounded memory.

Errors: a plain exception raised by the callable becomes an error response for that batch and the
server stays up; PyTriton's `PyTritonUnrecoverableError` would shut the server down, so it is never
raised here. Triton itself refuses requests whose dtype, rank or channel count do not match the
model config; `prepost.check_images` refuses zero-size and oversized ones. Triton's dynamic
batcher groups only requests of equal shape, so one batch shares one verdict.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import sysconfig
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from elan_deploy.errors import ElanDeployError, RuntimeUnavailable, WorkFailed
from elan_deploy.serve.prepost import DEFAULT_MAX_PIXELS, check_images

INPUT = OUTPUT = "image"


@dataclass(frozen=True)
class ServeOptions:
    """Where and how the model is exposed."""

    model_name: str
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_batch: int = 4
    max_pixels: int = DEFAULT_MAX_PIXELS
    queue_delay_us: int = 2000  # how long Triton waits to fill a batch of same-size requests

    def check(self) -> None:
        ports = [self.http_port, self.grpc_port, self.metrics_port]
        if any(not 0 < p < 65536 for p in ports) or len(set(ports)) != 3:
            raise ElanDeployError(f"--http-port, --grpc-port and --metrics-port must be three different ports in 1..65535, got {ports}")
        if self.max_batch < 1 or self.max_pixels < 1:
            raise ElanDeployError("--max-batch and --max-pixels must be 1 or more")
        import re

        if not re.fullmatch(r"[A-Za-z0-9._-]+", self.model_name):
            raise ElanDeployError(f"model name '{self.model_name}' may contain only letters, digits, '.', '_' and '-'")


class UpscaleHandler:
    """The inference callable: a list of Triton requests -> a list of responses, in order.

    Each request's `image` is [N, H, W, 3] uint8; each image goes through `upscale_uint8`, which
    tiles large images so memory depends on the tile, not the image.
    """

    def __init__(self, upscale_uint8: Callable[[np.ndarray], np.ndarray], max_pixels: int) -> None:
        self.upscale_uint8 = upscale_uint8
        self.max_pixels = max_pixels

    def __call__(self, requests):
        responses = []
        for request in requests:
            batch = check_images(request[INPUT], self.max_pixels)
            responses.append({OUTPUT: np.stack([self.upscale_uint8(image) for image in batch])})
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
    try:
        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
        from pytriton.triton import Triton, TritonConfig
    except ImportError:
        raise RuntimeUnavailable("PyTriton is not installed; pip install 'elan-deploy[serve]'") from None
    return Triton, TritonConfig, ModelConfig, DynamicBatcher, Tensor


class StopSignal:
    """SIGINT/SIGTERM set an event instead of raising, so shutdown runs on the main thread."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.received: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignal:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, _frame) -> None:
        self.received = signal.Signals(signum).name
        self.event.set()

    def __exit__(self, *_exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def serve(options: ServeOptions, handler: UpscaleHandler, announce: Callable[[str], None], poll_s: float = 0.5) -> int:
    """Start Triton with the handler bound as `options.model_name`; block until a signal; 0 on a clean stop.

    Returns 0 after SIGINT/SIGTERM; raises WorkFailed when the server dies on its own.
    """
    options.check()
    Triton, TritonConfig, ModelConfig, DynamicBatcher, Tensor = _import_pytriton()
    expose_interpreter_libpython()
    # PyTriton logs every model event at INFO; keep the console to warnings and our own lines.
    logging.getLogger("pytriton").setLevel(logging.WARNING)
    config = TritonConfig(
        http_address=options.host, http_port=options.http_port,
        grpc_address=options.host, grpc_port=options.grpc_port,
        metrics_address=options.host, metrics_port=options.metrics_port,
        allow_metrics=True, allow_gpu_metrics=False, allow_cpu_metrics=True,
        exit_timeout_secs=10, log_verbose=0,
    )
    with StopSignal() as stop:
        triton = Triton(config=config)
        try:
            triton.bind(
                model_name=options.model_name,
                infer_func=handler,
                inputs=[Tensor(name=INPUT, dtype=np.uint8, shape=(-1, -1, 3))],
                outputs=[Tensor(name=OUTPUT, dtype=np.uint8, shape=(-1, -1, 3))],
                config=ModelConfig(
                    max_batch_size=options.max_batch,
                    batcher=DynamicBatcher(max_queue_delay_microseconds=options.queue_delay_us),
                ),
                strict=True,
            )
            try:
                triton.run()
            except Exception as exc:  # noqa: BLE001 - PyTriton raises TimeoutError, PyTritonError, tritonclient errors
                raise WorkFailed(f"Triton did not start: {' '.join(str(exc).split())[:300]}; is a port in use? choose others with --http-port/--grpc-port/--metrics-port") from None
            if not stop.event.is_set():
                announce(
                    f"serving '{options.model_name}': http://{options.host}:{options.http_port} "
                    f"grpc {options.host}:{options.grpc_port} metrics http://{options.host}:{options.metrics_port}/metrics "
                    f"(Ctrl+C or SIGTERM stops it)"
                )
            while not stop.event.wait(poll_s):
                if not triton.is_alive():
                    raise WorkFailed("the Triton server stopped unexpectedly; see its log above")
        finally:
            triton.stop()
    announce(f"stopped on {stop.received}")
    sys.stdout.flush()
    return 0
