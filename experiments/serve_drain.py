"""How `elan-deploy serve` stops under load: SIGTERM with requests in flight.

    python -m experiments.serve_drain [--onnx model.onnx] [--requests 6] [--size 160] [--after 1.0]
                                      [--drain-timeout 10] [--protocol http|grpc] [--repeat 1]

Starts `elan-deploy serve` on free loopback ports, sends `--requests` requests of one
`--size`x`--size` image at once (each from its own client), sends SIGTERM `--after` seconds
later and reports, per run: the exit code, the seconds from the signal to the process's exit,
and how many requests were answered, refused with "server shutting down" (HTTP 503 / gRPC
UNAVAILABLE) or dropped (connection closed, any other error), with each request's seconds from
the signal to its answer. Kubernetes sends SIGKILL 30 s after SIGTERM by default.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from elan_deploy.cpu import cpu_model
from elan_deploy.serve.server import free_loopback_ports as free_ports

MODEL = "elan-light-x4"


def client_module(protocol: str):
    if protocol == "grpc":
        import tritonclient.grpc as module
    else:
        import tritonclient.http as module
    return module


def call(protocol: str, port: int, batch: np.ndarray):
    """The output array, or the exception the client raised."""
    module = client_module(protocol)
    if protocol == "grpc":
        client = module.InferenceServerClient(f"127.0.0.1:{port}")
    else:
        client = module.InferenceServerClient(f"127.0.0.1:{port}", connection_timeout=600, network_timeout=600)
    try:
        tensor = module.InferInput("image", list(batch.shape), "UINT8")
        tensor.set_data_from_numpy(batch)
        kwargs = {"client_timeout": 600} if protocol == "grpc" else {}
        return client.infer(MODEL, [tensor], **kwargs).as_numpy("image")
    except Exception as exc:  # noqa: BLE001 - refusals and dropped connections are what is counted
        return exc
    finally:
        client.close()


def outcome(result) -> str:
    if isinstance(result, np.ndarray):
        return "answered"
    status = str(getattr(result, "status", lambda: "")())
    if status in ("503", "StatusCode.UNAVAILABLE") and "server shutting down" in str(result):
        return "refused"
    return "dropped"


def start_server(args: argparse.Namespace, log: Path) -> tuple[subprocess.Popen, dict[str, int]]:
    http, grpc, metrics = free_ports(3)
    command = [
        sys.executable, "-m", "elan_deploy.cli", "serve", "--http-port", str(http), "--grpc-port", str(grpc),
        "--metrics-port", str(metrics), "--max-pixels", str(args.size * args.size), "--drain-timeout", str(args.drain_timeout),
    ]
    if args.onnx:
        command += ["--onnx", str(args.onnx)]
    with open(log, "wb") as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    http_client = client_module("http").InferenceServerClient(f"127.0.0.1:{http}")
    deadline = time.monotonic() + args.startup_timeout
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"serve exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
            try:
                if http_client.is_model_ready(MODEL):
                    break
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            if time.monotonic() > deadline:
                proc.kill()
                raise SystemExit(f"serve not ready after {args.startup_timeout} s")
            time.sleep(0.5)
    finally:
        http_client.close()
    return proc, {"http": http, "grpc": grpc}


def one_run(args: argparse.Namespace, log: Path) -> dict:
    proc, ports = start_server(args, log)
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 256, (1, args.size, args.size, 3), dtype=np.uint8) for _ in range(args.requests)]
    results: list = [None] * args.requests
    answered_at: list[float] = [0.0] * args.requests

    def worker(i: int) -> None:
        results[i] = call(args.protocol, ports[args.protocol], batches[i])
        answered_at[i] = time.monotonic()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.requests)]
    for t in threads:
        t.start()
    time.sleep(args.after)
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(120)
    stop_s = time.monotonic() - signalled
    for t in threads:
        t.join(60)
    kinds = [outcome(r) for r in results]
    return {
        "exit_code": code, "stop_s": stop_s, "kinds": kinds,
        "after_signal_s": [round(t - signalled, 2) for t in answered_at],
        "last_line": next((line for line in reversed(log.read_text().splitlines()) if "stopped on" in line), ""),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--onnx", type=Path, help="serve this exported ONNX [export the bundled model]")
    parser.add_argument("--requests", type=int, default=6)
    parser.add_argument("--size", type=int, default=160, help="LR image side in pixels [160]")
    parser.add_argument("--after", type=float, default=1.0, help="seconds between sending and SIGTERM [1.0]")
    parser.add_argument("--drain-timeout", type=float, default=10.0, help="passed to serve [10]")
    parser.add_argument("--protocol", choices=("http", "grpc"), default="http")
    parser.add_argument("--repeat", type=int, default=1, help="runs, each on a fresh server [1]")
    parser.add_argument("--startup-timeout", type=float, default=600.0)
    args = parser.parse_args()
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; {args.requests} requests of 1x{args.size}x{args.size}x3 over "
          f"{args.protocol}, SIGTERM {args.after:g} s after sending, --drain-timeout {args.drain_timeout:g}")
    with tempfile.TemporaryDirectory() as scratch:
        for run in range(args.repeat):
            r = one_run(args, Path(scratch) / f"serve-{run}.log")
            counts = {kind: r["kinds"].count(kind) for kind in ("answered", "refused", "dropped")}
            print(f"run {run + 1}: exit {r['exit_code']}, SIGTERM to exit {r['stop_s']:.1f} s; "
                  f"answered {counts['answered']}, refused {counts['refused']}, dropped {counts['dropped']}; "
                  f"answers at {r['after_signal_s']} s after the signal; serve: {r['last_line'].strip()}")


if __name__ == "__main__":
    main()
