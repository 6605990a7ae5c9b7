"""`elan-deploy serve` on a real Triton server (PyTriton's bundled tritonserver), and `elan-deploy loadtest`.

One server process is shared by the module (startup costs ~10 s); it listens on free loopback
ports, gets small Set5-derived requests over HTTP and gRPC, bad requests (alone and batched with
a good one), a load test, and is stopped with SIGTERM by the last test, which checks exit 0 and
that no child process is left. `running_serve` (tests/helpers.py) starts one; tests/e2e/test_fault_injection.py
uses it to stop servers under load.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("pytriton")
httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

from elan_deploy.serve.server import free_loopback_ports as free_ports  # noqa: E402
from tests.helpers import MODEL, assert_nothing_left, running_serve  # noqa: E402

MAX_PIXELS = 20_000  # small on purpose: a 1x150x150 request is over it


def lr_crop(shared: Path, name: str, height: int = 48, width: int = 64) -> np.ndarray:
    image = np.asarray(Image.open(shared / "Set5" / "LR_bicubic" / "X4" / f"{name}x4.png").convert("RGB"))
    return np.ascontiguousarray(image[:height, :width])


@pytest.fixture(scope="module")
def server(exported_onnx, tmp_path_factory):
    with running_serve(exported_onnx, tmp_path_factory.mktemp("serve") / "serve.log", "--max-pixels", str(MAX_PIXELS)) as started:
        yield started


@pytest.fixture(scope="module")
def reference_upscaler(model_source, tmp_path_factory):
    """The same engine (ONNX Runtime fp32 from the same ONNX) in this process, through the Upscaler."""
    from elan_deploy.runtimes import EngineLoader
    from elan_deploy.upscale import Upscaler

    engine = EngineLoader(model_source, "onnxruntime", "fp32", cache_root=tmp_path_factory.mktemp("ref-engines")).open()
    return Upscaler(engine, model_source.scale)


def http_infer(port: int, batch: np.ndarray, dtype: str = "UINT8") -> np.ndarray:
    client = httpclient.InferenceServerClient(f"127.0.0.1:{port}", network_timeout=120)
    try:
        tensor = httpclient.InferInput("image", list(batch.shape), dtype)
        tensor.set_data_from_numpy(batch)
        return client.infer(MODEL, [tensor]).as_numpy("image")
    finally:
        client.close()


def grpc_infer(port: int, batch: np.ndarray) -> np.ndarray:
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
    try:
        tensor = grpcclient.InferInput("image", list(batch.shape), "UINT8")
        tensor.set_data_from_numpy(batch)
        return client.infer(MODEL, [tensor], client_timeout=120).as_numpy("image")
    finally:
        client.close()


def test_listens_on_loopback_only(server):
    loopback = {"0100007F", "0000000000000000FFFF00000100007F"}  # 127.0.0.1 in /proc/net/tcp and tcp6
    bound: dict[int, set[str]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            for row in (line.split() for line in rows.readlines()[1:]):
                if row[3] == "0A":  # LISTEN
                    address, port = row[1].split(":")
                    bound.setdefault(int(port, 16), set()).add(address)
    for port in (server["http"], server["grpc"], server["metrics"]):
        assert port in bound, f"port {port} is not listening"
        assert bound[port] <= loopback, f"port {port} listens on {bound[port]}, not only on 127.0.0.1"


def test_http_and_grpc_outputs_equal_the_upscaler(server, shared_data, reference_upscaler):
    baby, bird = lr_crop(shared_data, "baby"), lr_crop(shared_data, "bird")
    expected = [reference_upscaler.upscale_uint8(img) for img in (baby, bird)]

    over_http = http_infer(server["http"], baby[None])
    assert over_http.dtype == np.uint8 and over_http.shape == (1, 192, 256, 3)
    assert np.array_equal(over_http[0], expected[0])

    over_grpc = grpc_infer(server["grpc"], np.stack([baby, bird]))  # one request, batch of two
    assert over_grpc.shape == (2, 192, 256, 3)
    assert np.array_equal(over_grpc[0], expected[0])
    assert np.array_equal(over_grpc[1], expected[1])


def test_model_config_has_dynamic_batching(server):
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server['http']}")
    try:
        config = client.get_model_config(MODEL)
    finally:
        client.close()
    assert config["max_batch_size"] == 4
    assert "dynamic_batching" in config
    assert config["input"][0]["data_type"] == "TYPE_UINT8" and [int(d) for d in config["input"][0]["dims"]] == [-1, -1, 3]


SERVER_DETAIL = re.compile(r"Traceback|File \"|\.py\b|site-packages|/tmp/|/root/|/home/")  # what a client must not see


def assert_one_clean_line(text: str) -> None:
    assert "\n" not in text.strip(), text
    assert not SERVER_DETAIL.search(text), text


@pytest.mark.parametrize(
    "batch, dtype, message",
    [
        (np.zeros((1, 16, 16, 3), np.float32), "FP32", "UINT8"),  # wrong dtype: Triton refuses it against the config
        (np.zeros((2, 16, 3), np.uint8), "UINT8", "unexpected shape"),  # rank 3
        (np.zeros((1, 16, 16, 4), np.uint8), "UINT8", "unexpected shape"),  # 4 channels
        (np.zeros((1, 0, 16, 3), np.uint8), "UINT8", "zero-size dimension"),  # refused before PyTriton's serializer
        (np.zeros((1, 150, 150, 3), np.uint8), "UINT8", "over this server's limit"),  # 22 500 > MAX_PIXELS
    ],
    ids=["dtype", "rank", "channels", "zero-size", "pixel-limit"],
)
def test_bad_request_gets_a_one_line_400_and_server_stays_up(server, batch, dtype, message):
    with pytest.raises(InferenceServerException) as caught:
        http_infer(server["http"], batch, dtype)
    assert caught.value.status() == "400", str(caught.value)
    assert message in caught.value.message()
    assert_one_clean_line(caught.value.message())
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server['http']}")
    try:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
    finally:
        client.close()
    good = http_infer(server["http"], np.full((1, 16, 24, 3), 128, np.uint8))
    assert good.shape == (1, 64, 96, 3)
    assert server["proc"].poll() is None


@pytest.mark.parametrize(
    "batch, message",
    [(np.zeros((1, 0, 16, 3), np.uint8), "zero-size dimension"), (np.zeros((1, 150, 150, 3), np.uint8), "over this server's limit")],
    ids=["zero-size", "pixel-limit"],
)
def test_bad_request_over_grpc_is_invalid_argument(server, batch, message):
    with pytest.raises(InferenceServerException) as caught:
        grpc_infer(server["grpc"], batch)
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT", str(caught.value)
    assert message in caught.value.message()
    assert_one_clean_line(caught.value.message())


def test_a_bad_request_fails_alone_in_the_batch_it_shares(server, shared_data, reference_upscaler):
    """Requests of equal H and W from two clients are batched together; only the one over --max-pixels fails."""
    blocker = lr_crop(shared_data, "baby", 128, 128)[None]  # another size: runs alone while the pair queues behind it
    good = lr_crop(shared_data, "baby", 100, 100)[None]  # 10 000 pixels
    bad = np.repeat(good, 3, axis=0)  # 30 000 pixels > MAX_PIXELS; 1 + 3 images fit one batch of --max-batch 4
    results: dict[str, object] = {}

    def call(name: str, batch: np.ndarray) -> None:
        try:
            results[name] = http_infer(server["http"], batch)
        except InferenceServerException as exc:
            results[name] = exc

    first = threading.Thread(target=call, args=("blocker", blocker))
    first.start()
    time.sleep(0.3)
    pair = [threading.Thread(target=call, args=(name, batch)) for name, batch in (("good", good), ("bad", bad))]
    for thread in pair:
        thread.start()
    for thread in (first, *pair):
        thread.join(180)
    assert isinstance(results["good"], np.ndarray), results["good"]
    assert np.array_equal(results["good"][0], reference_upscaler.upscale_uint8(good[0]))
    assert isinstance(results["bad"], InferenceServerException) and results["bad"].status() == "400", results["bad"]
    assert "over this server's limit" in results["bad"].message()
    assert isinstance(results["blocker"], np.ndarray), results["blocker"]


def test_callable_failures_reach_clients_as_one_line_without_the_traceback():
    """What serve_model.py sends a client when the inference callable raises: its message, no server paths."""
    from elan_deploy.errors import NonFiniteOutput
    from elan_deploy.serve.prepost import last_error_line

    def formatted(exc: BaseException) -> str:
        try:
            raise exc
        except BaseException as caught:  # noqa: BLE001
            return "".join(traceback.format_exception(caught))

    message = "the engine produced 3 NaN/Inf value(s); serve an fp32 or bf16 engine"
    # PyTriton's proxy wraps the callable's traceback in its own, and the Python backend may add "At:" frames
    wrapped = f"Model execute error: {formatted(RuntimeError('proxy'))}c_python_backend_utils.TritonModelException: "
    wrapped += formatted(NonFiniteOutput(message)) + "\n\nAt:\n  /tmp/folder/1/model.py(501): execute\n"
    assert last_error_line(wrapped) == message
    assert last_error_line(formatted(MemoryError())) == "inference failed: MemoryError"
    assert_one_clean_line(last_error_line(wrapped))


def test_a_busy_port_fails_at_once_in_one_line(exported_onnx):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        http_port, metrics_port = free_ports(2)
        start = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "elan_deploy.cli", "serve", "--onnx", str(exported_onnx), "--http-port", str(http_port),
             "--grpc-port", str(busy), "--metrics-port", str(metrics_port)],
            capture_output=True, text=True, timeout=120,
        )
        took = time.monotonic() - start
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert f"port {busy}" in lines[0] and "--grpc-port" in lines[0], lines[0]
    assert took < 30, f"took {took:.1f} s"  # the interpreter's start-up: the check itself runs before the engine is built


def test_health_and_metrics_endpoints(server):
    base = f"http://127.0.0.1:{server['http']}"
    for path in ("/v2/health/live", "/v2/health/ready", f"/v2/models/{MODEL}/ready"):
        with urllib.request.urlopen(base + path, timeout=10) as response:
            assert response.status == 200, path
    with urllib.request.urlopen(f"http://127.0.0.1:{server['metrics']}/metrics", timeout=10) as response:
        metrics = response.read().decode()
    success = [line for line in metrics.splitlines() if line.startswith(f'nv_inference_request_success{{model="{MODEL}"')]
    assert success and float(success[0].rsplit(" ", 1)[1]) >= 1


def test_loadtest_at_concurrency_1_2_4_has_no_errors(server, tmp_path):
    import jsonschema
    import onnxruntime

    from elan_deploy.cli import main
    from elan_deploy.results import SCHEMA_FILE

    out = tmp_path / "loadtest.json"
    rc = main([
        "loadtest", f"127.0.0.1:{server['http']}", "--concurrency", "1,2,4", "--requests", "6", "--size", "32x32",
        "--warmup", "1", "--time-limit", "120", "--json", str(out),  # the engine comes from the model's config
    ])
    assert rc == 0
    document = json.loads(out.read_text())
    jsonschema.validate(document, json.loads(SCHEMA_FILE.read_text()))
    rows = document["rows"]
    assert [r["concurrency"] for r in rows] == [1, 2, 4]
    for row in rows:
        assert (row["runtime"], row["precision"], row["precision_used"], row["model"]) == ("onnxruntime", "fp32", "fp32", MODEL)
        assert row["runtime_version"] == onnxruntime.__version__
        assert row["kind"] == "loadtest" and row["errors"] == 0 and row["requests"] == 6
        assert row["shape"] == "1x3x32x32" and 0 < row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"] <= row["max_ms"]
        assert row["requests_per_s"] > 0


def test_loadtest_over_grpc(server):
    from elan_deploy.cli import main

    assert main(["loadtest", f"127.0.0.1:{server['grpc']}", "--protocol", "grpc", "--concurrency", "2", "--requests", "4",
                 "--size", "32x32", "--warmup", "0"]) == 0


def test_loadtest_against_no_server_is_a_one_line_error(capsys):
    from elan_deploy.cli import main

    (port,) = free_ports(1)
    assert main(["loadtest", f"127.0.0.1:{port}", "--requests", "1"]) == 2
    assert "no Triton server answers" in capsys.readouterr().err


def test_sigterm_stops_cleanly_with_no_process_left(server):
    """Runs last in this module: it stops the shared server."""
    proc = server["proc"]
    children = server["children"]
    assert any("tritonserver" in name for name in children.values()), children
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0, server["log"].read_text()[-3000:]
    assert_nothing_left(children)
    assert "stopped on SIGTERM" in server["log"].read_text()
