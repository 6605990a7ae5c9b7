"""A bounded load test against a Triton server with tritonclient: throughput, latency percentiles, errors.

N worker threads, each with its own client (tritonclient clients are not shared across threads),
take request numbers from one counter until M requests have been sent or the time limit has
passed, so a run is bounded in both. Every response is checked: UINT8, [N, sH, sW, 3] with one
integer scale s >= 2; anything else counts as an error. Latency is wall-clock per request on the
client, including transfer and (de)serialisation, as a user of the server sees it.

`run_loadtest` runs one such test per concurrency level against the same server and model, and
turns each level into a row of the common results schema, naming the engine the server declares.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

import numpy as np

from elan_deploy.errors import ElanDeployError, RuntimeUnavailable
from elan_deploy.results import ResultRow, RowKind, results_document
from elan_deploy.serve.request_images import DEFAULT_SIZE, load_request_images, parse_size

PROTOCOLS = ("http", "grpc")


@dataclass(frozen=True)
class LoadTestConfig:
    url: str  # host:port (a leading http:// or grpc:// is accepted)
    model_name: str
    protocol: str = "http"
    concurrency: int = 1
    requests: int = 50
    warmup: int = 2  # requests sent before timing starts (not counted)
    timeout_s: float = 60.0  # per request
    time_limit_s: float = 300.0  # no new request starts after this

    @property
    def address(self) -> str:
        for scheme in ("http://", "https://", "grpc://"):
            if self.url.startswith(scheme):
                return self.url[len(scheme):].rstrip("/")
        return self.url.rstrip("/")

    def check(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ElanDeployError(f"--protocol must be http or grpc, got '{self.protocol}'")
        if self.concurrency < 1 or self.requests < 1 or self.warmup < 0:
            raise ElanDeployError("--concurrency and --requests must be 1 or more, --warmup 0 or more")
        if ":" not in self.address:
            raise ElanDeployError(f"URL '{self.url}' has no port; write HOST:PORT, e.g. 127.0.0.1:8000 (http) or 127.0.0.1:8001 (grpc)")


@dataclass
class LoadTestResult:
    concurrency: int
    sent: int = 0
    errors: int = 0
    wall_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    images_done: int = 0
    output_pixels: int = 0
    error_messages: list[str] = field(default_factory=list)
    stopped_by_time_limit: bool = False

    @property
    def ok(self) -> int:
        return len(self.latencies_ms)

    def percentile(self, q: float) -> float | None:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else None

    @property
    def requests_per_s(self) -> float:
        return self.ok / self.wall_s if self.wall_s else 0.0

    @property
    def images_per_s(self) -> float:
        return self.images_done / self.wall_s if self.wall_s else 0.0


class TritonImageClient:
    """One connection to the server; `upscale(batch)` sends a [N,H,W,3] uint8 batch and returns the output."""

    def __init__(self, config: LoadTestConfig) -> None:
        self.config = config
        try:
            if config.protocol == "grpc":
                import tritonclient.grpc as module
            else:
                import tritonclient.http as module
        except ImportError:
            raise RuntimeUnavailable("tritonclient is not installed; pip install 'elan-deploy[serve]'") from None
        self.module = module
        if config.protocol == "grpc":
            self.client = module.InferenceServerClient(config.address)
        else:
            self.client = module.InferenceServerClient(
                config.address, connection_timeout=config.timeout_s, network_timeout=config.timeout_s
            )

    def describe(self) -> tuple[str, str, dict[str, str]]:
        """(input name, output name, the model's `elan_deploy.*` config parameters) from the server."""
        from tritonclient.utils import InferenceServerException

        try:
            live = self.client.is_server_live()
        except Exception as exc:  # noqa: BLE001 - connection refused, DNS, timeouts surface as many types
            raise ElanDeployError(
                f"no Triton server answers at {self.config.address} ({self.config.protocol}): {type(exc).__name__}; "
                "start one with `elan-deploy serve` or check --protocol and the port"
            ) from None
        if not live:
            raise ElanDeployError(f"the Triton server at {self.config.address} is not live")
        try:
            meta = self.client.get_model_metadata(self.config.model_name)
            config = self.client.get_model_config(self.config.model_name)
        except InferenceServerException as exc:
            raise ElanDeployError(
                f"the server has no ready model '{self.config.model_name}' ({' '.join(str(exc).split())[:160]}); pass --model-name"
            ) from None
        if self.config.protocol == "grpc":
            from google.protobuf.json_format import MessageToDict

            meta = MessageToDict(meta, preserving_proto_field_name=True)
            config = MessageToDict(config, preserving_proto_field_name=True).get("config", {})
        inputs, outputs = meta.get("inputs", []), meta.get("outputs", [])
        if len(inputs) != 1 or len(outputs) != 1 or inputs[0].get("datatype") != "UINT8":
            raise ElanDeployError(
                f"model '{self.config.model_name}' is not an image upscaler (one UINT8 input, one output); got {meta}"
            )
        params = {
            key.removeprefix("elan_deploy."): value.get("string_value", "")
            for key, value in config.get("parameters", {}).items()
            if key.startswith("elan_deploy.")
        }
        return inputs[0]["name"], outputs[0]["name"], params

    def upscale(self, batch: np.ndarray, input_name: str, output_name: str) -> np.ndarray:
        tensor = self.module.InferInput(input_name, list(batch.shape), "UINT8")
        tensor.set_data_from_numpy(batch)
        outputs = [self.module.InferRequestedOutput(output_name)]
        if self.config.protocol == "grpc":
            result = self.client.infer(self.config.model_name, [tensor], outputs=outputs, client_timeout=self.config.timeout_s)
        else:
            result = self.client.infer(self.config.model_name, [tensor], outputs=outputs)
        return result.as_numpy(output_name)

    def close(self) -> None:
        self.client.close()


def check_output(batch: np.ndarray, out: np.ndarray | None) -> str | None:
    """None when `out` is a plausible upscale of `batch`, else what is wrong."""
    if out is None or out.dtype != np.uint8 or out.ndim != 4:
        return f"bad output: {None if out is None else (out.dtype, out.shape)}"
    n, h, w, c = batch.shape
    scale = out.shape[1] // h
    if out.shape != (n, h * scale, w * scale, c) or scale < 2:
        return f"output shape {list(out.shape)} is not an integer upscale of {list(batch.shape)}"
    return None


def run_load(config: LoadTestConfig, images: list[np.ndarray], names: tuple[str, str]) -> LoadTestResult:
    """Send `config.requests` requests (one image each, cycling through `images`) from `concurrency` threads."""
    config.check()
    input_name, output_name = names
    result = LoadTestResult(concurrency=config.concurrency)
    lock = threading.Lock()
    tickets = count()
    warm = TritonImageClient(config)
    try:
        for i in range(config.warmup):  # first requests pay for lazy allocations in the server
            warm.upscale(images[i % len(images)][None], input_name, output_name)
    except Exception as exc:  # noqa: BLE001
        raise ElanDeployError(f"the warm-up request failed: {' '.join(str(exc).split())[:300]}") from None
    finally:
        warm.close()
    # tritonclient's HTTP client runs on gevent, whose hub belongs to one thread: each worker
    # makes its own client, and the clock starts when all of them are connected.
    ready = threading.Barrier(config.concurrency + 1)
    deadline = [float("inf")]

    def worker() -> None:
        try:
            client = TritonImageClient(config)
        except Exception:
            ready.abort()  # the main thread then reports it instead of waiting forever
            raise
        try:
            ready.wait()
            while True:
                ticket = next(tickets)
                if ticket >= config.requests:
                    return
                if time.perf_counter() > deadline[0]:
                    with lock:
                        result.stopped_by_time_limit = True
                    return
                batch = images[ticket % len(images)][None]
                t0 = time.perf_counter()
                try:
                    out = client.upscale(batch, input_name, output_name)
                    problem = check_output(batch, out)
                except Exception as exc:  # noqa: BLE001 - every failure is counted, none stops the run
                    out, problem = None, f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
                elapsed_ms = (time.perf_counter() - t0) * 1e3
                with lock:
                    result.sent += 1
                    if problem is None:
                        result.latencies_ms.append(elapsed_ms)
                        result.images_done += batch.shape[0]
                        result.output_pixels += int(out.shape[0] * out.shape[1] * out.shape[2])
                    else:
                        result.errors += 1
                        if len(result.error_messages) < 5:
                            result.error_messages.append(problem)
        finally:
            client.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(config.concurrency)]
    for t in threads:
        t.start()
    try:
        ready.wait(timeout=config.timeout_s)
    except threading.BrokenBarrierError:
        raise ElanDeployError(f"could not open {config.concurrency} {config.protocol} client(s) to {config.address}") from None
    start = time.perf_counter()
    deadline[0] = start + config.time_limit_s
    for t in threads:
        t.join()
    result.wall_s = time.perf_counter() - start
    return result


def declared_version(declared: dict[str, str]) -> str | None:
    """The runtime version a server declares in `built_with` ("onnxruntime 1.32.0"), if any."""
    built_with = declared.get("built_with", "")
    return built_with.split(" ", 1)[1] if " " in built_with else None


@dataclass(frozen=True)
class LoadtestSettings:
    """A whole load test: one `LoadTestConfig` per concurrency level, the request images, and the
    engine to name in the results when the server's model does not declare it."""

    url: str
    model_name: str
    levels: tuple[int, ...] = (1,)
    protocol: str = "http"
    requests: int = 50
    warmup: int = 2
    timeout_s: float = 60.0
    time_limit_s: float = 300.0
    images: Path | None = None  # None: the bundled T91 samples
    size: str = DEFAULT_SIZE  # HxW centre crop, or "full"
    runtime: str | None = None
    precision: str | None = None
    require_engine: bool = False  # the results must name runtime and precision (a results document is wanted)

    def configs(self) -> list[LoadTestConfig]:
        return [
            LoadTestConfig(
                url=self.url, model_name=self.model_name, protocol=self.protocol, concurrency=level, requests=self.requests,
                warmup=self.warmup, timeout_s=self.timeout_s, time_limit_s=self.time_limit_s,
            )
            for level in self.levels
        ]

    def check(self) -> None:
        """Refuse settings no level could run with, before anything is read or connected to."""
        for config in self.configs():
            config.check()


@dataclass
class LoadtestRun:
    """Every level's measurements, and the same as rows of the common results schema."""

    settings: LoadtestSettings
    address: str
    shape: str | None  # "1x3xHxW" when every request has the same size
    results: list[LoadTestResult]
    rows: list[ResultRow]

    @property
    def failed_requests(self) -> int:
        return sum(r.errors for r in self.results)

    @property
    def stopped_by_time_limit(self) -> bool:
        return any(r.stopped_by_time_limit for r in self.results)

    def to_json(self, command: str) -> dict[str, Any]:
        """The results document, with the command line that produced it."""
        document = results_document(self.rows)
        document["command"] = command
        return document


def _row_extra(config: LoadTestConfig, result: LoadTestResult, shape: str | None) -> dict[str, Any]:
    """The `loadtest` fields of one level's row (see results_schema.json)."""
    extra: dict[str, Any] = {
        "kind": RowKind.LOADTEST.value, "protocol": config.protocol, "url": config.address, "concurrency": config.concurrency,
        "requests": result.sent, "errors": result.errors, "wall_s": round(result.wall_s, 3),
        "requests_per_s": round(result.requests_per_s, 3), "images_per_s": round(result.images_per_s, 3),
        "output_mpix_per_s": round(result.output_pixels / result.wall_s / 1e6, 3) if result.wall_s else 0.0,
        "stopped_by_time_limit": result.stopped_by_time_limit,
    }
    if shape:
        extra["shape"] = shape
    if result.latencies_ms:
        for name, q in (("p50_ms", 50), ("p90_ms", 90), ("p99_ms", 99)):
            extra[name] = round(result.percentile(q), 3)
        extra.update(
            min_ms=round(min(result.latencies_ms), 3), max_ms=round(max(result.latencies_ms), 3),
            mean_ms=round(float(np.mean(result.latencies_ms)), 3),
        )
    if result.error_messages:
        extra["first_error"] = result.error_messages[0]
    return extra


def run_loadtest(settings: LoadtestSettings, on_level: Callable[[LoadTestConfig], None] | None = None) -> LoadtestRun:
    """Run every concurrency level in turn against the model the server describes; `on_level` hears of each
    level before it starts. Fails before the first request when the results could not name the engine."""
    from elan_deploy.runtimes import Precision

    configs = settings.configs()
    if settings.precision is not None:
        Precision.parse(settings.precision)
    images, dataset = load_request_images(settings.images, parse_size(settings.size))
    probe = TritonImageClient(configs[0])
    input_name, output_name, declared = probe.describe()
    probe.close()
    runtime = declared.get("runtime") or settings.runtime
    precision = declared.get("precision") or settings.precision
    if settings.require_engine and (runtime is None or precision is None):
        raise ElanDeployError(
            f"model '{settings.model_name}' does not declare its engine; pass --runtime and --precision "
            "(as given to `elan-deploy serve`) so the JSON says what was measured"
        )
    shape = f"1x3x{images[0].shape[0]}x{images[0].shape[1]}" if len({img.shape for img in images}) == 1 else None
    run = LoadtestRun(settings, configs[0].address, shape, results=[], rows=[])
    for config in configs:
        if on_level is not None:
            on_level(config)
        result = run_load(config, images, (input_name, output_name))
        run.results.append(result)
        run.rows.append(ResultRow(
            model=declared.get("model", settings.model_name), runtime=runtime or "unknown", precision=precision or "unknown",
            dataset=dataset, images=len(images), runtime_version=declared_version(declared),
            precision_used=declared.get("precision_used") or None, extra=_row_extra(config, result, shape),
        ))
    return run
