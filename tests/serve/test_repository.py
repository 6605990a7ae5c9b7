"""`elan-deploy triton-repo`: configs parse as Triton model configs, the models inside match the toolkit's.

The ONNX Runtime and OpenVINO network files are run directly with onnxruntime and openvino and
compared with the export and the OpenVINO engine; the NumPy pre/post steps around them are
compared with the Upscaler. The slow test loads the pre/post Python models and the ensemble in a
real tritonserver (PyTriton's, which has only the Python backend: the network step there runs
the repository's own model.onnx with onnxruntime inside a Python-backend model).
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import natural_crop

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
from google.protobuf import text_format  # noqa: E402

NAME = "elan-light-x4"


def parse(path: Path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_repo(out: Path, onnx: Path, *extra: str) -> int:
    from elan_deploy.cli import main

    return main(["triton-repo", str(out), "--onnx", str(onnx), *extra])


@pytest.fixture(scope="module")
def ort_repo(exported_onnx, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("repos") / "ort"
    assert write_repo(out, exported_onnx, "--runtime", "onnxruntime", "--precision", "fp32", "--instances", "2") == 0
    return out


@pytest.fixture(scope="module")
def ov_repo(exported_onnx, tmp_path_factory) -> Path:
    pytest.importorskip("openvino")
    out = tmp_path_factory.mktemp("repos") / "ov"
    assert write_repo(out, exported_onnx, "--runtime", "openvino", "--precision", "fp32") == 0
    return out


def test_every_config_parses_and_the_ensemble_is_wired(ort_repo):
    configs = {p.parent.name: parse(p) for p in ort_repo.glob("*/config.pbtxt")}
    assert set(configs) == {NAME, f"{NAME}-pre", f"{NAME}-net", f"{NAME}-post"}
    for folder, config in configs.items():
        assert config.name == folder and (ort_repo / folder / "1").is_dir()
        assert config.max_batch_size == 4

    net = configs[f"{NAME}-net"]
    assert net.platform == "onnxruntime_onnx" and (ort_repo / f"{NAME}-net" / "1" / "model.onnx").is_file()
    assert [(t.name, t.data_type, list(t.dims)) for t in net.input] == [("lr", model_config_pb2.TYPE_FP32, [3, -1, -1])]
    assert [(t.name, t.data_type, list(t.dims)) for t in net.output] == [("sr", model_config_pb2.TYPE_FP32, [3, -1, -1])]
    assert net.instance_group[0].count == 2 and net.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert net.HasField("dynamic_batching")

    ensemble = configs[NAME]
    assert ensemble.platform == "ensemble"
    assert [(t.name, t.data_type, list(t.dims)) for t in ensemble.input] == [("image", model_config_pb2.TYPE_UINT8, [-1, -1, 3])]
    assert ensemble.output[0].data_type == model_config_pb2.TYPE_UINT8 and list(ensemble.output[0].dims) == [-1, -1, 3]
    assert ensemble.output[0].name != ensemble.input[0].name  # one namespace: a reused name deadlocks Triton
    steps = ensemble.ensemble_scheduling.step
    assert [s.model_name for s in steps] == [f"{NAME}-pre", f"{NAME}-net", f"{NAME}-post"]
    # every step input is the ensemble input or an earlier step's output; the last step makes the output
    produced = {"image"}
    for step in steps:
        model = configs[step.model_name]
        assert set(step.input_map) == {t.name for t in model.input}
        assert set(step.output_map) <= {t.name for t in model.output}
        assert set(step.input_map.values()) <= produced
        produced |= set(step.output_map.values())
    assert ensemble.output[0].name in set(steps[-1].output_map.values())
    assert ensemble.parameters["elan_deploy.runtime"].string_value == "onnxruntime"
    assert ensemble.parameters["elan_deploy.precision"].string_value == "fp32"
    for stage in ("pre", "post"):
        python = configs[f"{NAME}-{stage}"]
        assert python.backend == "python" and python.parameters["stage"].string_value == stage
        assert {"model.py", "prepost.py", "geometry.py"} <= {p.name for p in (ort_repo / f"{NAME}-{stage}" / "1").iterdir()}


def test_the_shipped_stage_files_run_without_elan_deploy(ort_repo):
    """Triton's Python backend has NumPy but not elan-deploy: prepost.py must find its padding in the geometry.py beside it."""
    from elan_deploy.serve.prepost import preprocess

    script = (
        "import sys, numpy as np\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'elan_deploy': raise ImportError('no elan_deploy in a Triton container')\n"
        "sys.meta_path.insert(0, Block())\n"
        f"sys.path.insert(0, {str(ort_repo / f'{NAME}-pre' / '1')!r})\n"
        "import prepost\n"
        "image = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(1, 5, 7, 3)\n"
        "lr, size = prepost.preprocess(image, 10**6)\n"
        "np.save(sys.stdout.buffer, lr)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    shipped = np.load(io.BytesIO(done.stdout))
    expected, _ = preprocess(np.arange(5 * 7 * 3, dtype=np.uint8).reshape(1, 5, 7, 3), 10**6)
    assert shipped.shape == (1, 3, 16, 16) and np.array_equal(shipped, expected)


def test_onnx_model_matches_the_export_and_the_pipeline_matches_the_upscaler(ort_repo, exported_onnx, model_source, shared_data, tmp_path):
    import onnxruntime as ort

    from elan_deploy.runtimes import EngineLoader
    from elan_deploy.serve.prepost import postprocess, preprocess
    from elan_deploy.upscale import Upscaler

    repo_onnx = ort_repo / f"{NAME}-net" / "1" / "model.onnx"
    assert sha256(repo_onnx) == sha256(exported_onnx)
    image = natural_crop(shared_data, 45, 61).astype(np.uint8)  # not a multiple of 16: exercises the padding
    lr, size = preprocess(image[None], max_pixels=10_000)
    assert lr.shape == (1, 3, 48, 64) and size.tolist() == [[45, 61]]
    options = ort.SessionOptions()
    options.log_severity_level = 3
    ran = ort.InferenceSession(str(repo_onnx), options, providers=["CPUExecutionProvider"]).run(None, {"lr": lr})[0]
    reference = ort.InferenceSession(str(exported_onnx), options, providers=["CPUExecutionProvider"]).run(None, {"lr": lr})[0]
    assert np.array_equal(ran, reference)
    served = postprocess(ran, size)[0]

    engine = EngineLoader(model_source, "onnxruntime", "fp32", cache_root=tmp_path).open()
    assert np.array_equal(served, Upscaler(engine, 4, tile=None).upscale_uint8(image))


def test_openvino_ir_matches_the_openvino_engine(ov_repo, model_source, exported_onnx, shared_data, tmp_path):
    import onnxruntime as ort
    import openvino as ov

    from elan_deploy.runtimes import EngineLoader
    from elan_deploy.scratch import cache_root

    net = parse(ov_repo / f"{NAME}-net" / "config.pbtxt")
    assert net.backend == "openvino" and net.default_model_filename == "model.xml"
    assert "HINT_BF16" not in net.parameters  # fp32 asked: the backend must not be told bf16
    xml = ov_repo / f"{NAME}-net" / "1" / "model.xml"
    assert xml.is_file() and xml.with_suffix(".bin").is_file()

    x = natural_crop(shared_data, 48, 64).transpose(2, 0, 1)[None].copy()
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(xml)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    ran = np.asarray(compiled.create_infer_request().infer({0: x})[compiled.output(0)])

    # the cache the command built into (conftest's isolated one): the engine is loaded, not rebuilt
    engine = EngineLoader(model_source, "openvino", "fp32", cache_root=cache_root()).open()
    assert sha256(xml.with_suffix(".bin")) == sha256(Path(engine.info.details["engine"]) / "model.bin")
    assert np.array_equal(ran, engine(x))

    options = ort.SessionOptions()
    options.log_severity_level = 3
    exported = ort.InferenceSession(str(exported_onnx), options, providers=["CPUExecutionProvider"]).run(None, {"lr": x})[0]
    assert ran.shape == exported.shape == (1, 3, 192, 256)
    # two runtimes, fp32: a bound relative to the output's magnitude (~255), not an absolute one
    assert np.max(np.abs(ran - exported)) <= 1e-4 * np.max(np.abs(exported))


@pytest.mark.parametrize("precision, hint", [("fp32", None), ("bf16", "YES"), ("int8", "YES")])
def test_openvino_precision_reaches_the_backend(precision, hint):
    from elan_deploy.serve.repository import RepositorySpec, net_config

    config = net_config(RepositorySpec(name=NAME, runtime="openvino", precision=precision))
    assert (config.parameters["HINT_BF16"].string_value if "HINT_BF16" in config.parameters else None) == hint


def test_refuses_a_user_folder_and_keeps_its_files(exported_onnx, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert write_repo(out, exported_onnx) == 2
    assert (out / "notes.txt").read_text() == "keep me" and sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert "left as it is" in capsys.readouterr().err


def test_rewrites_its_own_repository_but_not_one_a_user_added_to(exported_onnx, tmp_path):
    out = tmp_path / "repo"
    assert write_repo(out, exported_onnx) == 0
    assert write_repo(out, exported_onnx, "--max-batch", "2") == 0  # ours: replaced
    assert parse(out / NAME / "config.pbtxt").max_batch_size == 2
    (out / "other-model").mkdir()
    (out / "other-model" / "config.pbtxt").write_text('name: "other-model"\n')
    assert write_repo(out, exported_onnx) == 2  # now holds a user's model: left alone
    assert (out / "other-model" / "config.pbtxt").is_file() and parse(out / NAME / "config.pbtxt").max_batch_size == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary folders left behind"


def test_bad_flags_are_one_line_errors_before_any_build(exported_onnx, tmp_path, capsys):
    out = tmp_path / "x"
    assert write_repo(out, exported_onnx, "--runtime", "torch") == 2
    assert write_repo(out, exported_onnx, "--runtime", "openvino", "--precision", "fp16") == 2
    assert write_repo(out, exported_onnx, "--shapes", "1x3x64x64") == 2
    err = capsys.readouterr().err
    assert "triton-repo writes models for" in err and "no fp16 hint" in err and "pass a min:opt:max range" in err
    assert not out.exists()


def test_output_under_a_file_says_the_file_is_in_the_way(exported_onnx, tmp_path, capsys):
    from tests.helpers import message_lines

    blocker = tmp_path / "file"
    blocker.write_text("mine")
    assert write_repo(blocker / "sub", exported_onnx) == 2
    err = message_lines(capsys.readouterr().err)
    assert len(err) == 1 and f"'{blocker}' is a file, not a folder" in err[0] and "does not exist" not in err[0]
    assert blocker.read_text() == "mine"


NET_STAND_IN = '''
import os
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        path = os.path.join(os.path.dirname(__file__), "model.onnx")
        self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])

    def execute(self, requests):
        responses = []
        for request in requests:
            lr = pb_utils.get_input_tensor_by_name(request, "lr").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("sr", self.session.run(None, {"lr": lr})[0])]))
        return responses
'''


@pytest.mark.slow
def test_ensemble_runs_on_a_real_tritonserver(ort_repo, tmp_path, shared_data, model_source):
    """Pre/post Python models and the ensemble, unchanged, on PyTriton's tritonserver; the network
    model becomes a Python-backend model running the repository's model.onnx (the bundled server
    has no onnxruntime backend)."""
    import shutil

    pytest.importorskip("pytriton")
    import tritonclient.http as httpclient
    from pytriton.triton import Triton, TritonConfig
    from tritonclient.utils import InferenceServerException

    from elan_deploy.runtimes import EngineLoader
    from elan_deploy.serve.repository import ENSEMBLE_OUTPUT, config_text
    from elan_deploy.serve.server import expose_interpreter_libpython
    from elan_deploy.serve.server import free_loopback_ports as free_ports
    from elan_deploy.upscale import Upscaler

    repo = tmp_path / "repo"
    shutil.copytree(ort_repo, repo)
    net_config = parse(repo / f"{NAME}-net" / "config.pbtxt")
    net_config.ClearField("platform")
    net_config.ClearField("default_model_filename")
    net_config.backend = "python"
    (repo / f"{NAME}-net" / "config.pbtxt").write_text(config_text(net_config))
    (repo / f"{NAME}-net" / "1" / "model.py").write_text(NET_STAND_IN)

    expose_interpreter_libpython()
    http, grpc, metrics = free_ports(3)
    triton = Triton(config=TritonConfig(
        model_repository=repo, http_address="127.0.0.1", http_port=http, grpc_address="127.0.0.1", grpc_port=grpc,
        metrics_address="127.0.0.1", metrics_port=metrics, exit_timeout_secs=5,
    ))
    image = natural_crop(shared_data, 45, 61).astype(np.uint8)
    try:
        triton.run()
        client = httpclient.InferenceServerClient(f"127.0.0.1:{http}", network_timeout=120)
        tensor = httpclient.InferInput("image", [1, 45, 61, 3], "UINT8")
        tensor.set_data_from_numpy(image[None])
        out = client.infer(NAME, [tensor]).as_numpy(ENSEMBLE_OUTPUT)
        big = httpclient.InferInput("image", [1, 2100, 2100, 3], "UINT8")
        big.set_data_from_numpy(np.zeros((1, 2100, 2100, 3), np.uint8))
        with pytest.raises(InferenceServerException, match="over this server's limit"):
            client.infer(NAME, [big])
        assert client.is_server_ready() and client.is_model_ready(NAME)
        client.close()
    finally:
        triton.stop()
    engine = EngineLoader(model_source, "onnxruntime", "fp32", cache_root=tmp_path).open()
    assert np.array_equal(out[0], Upscaler(engine, 4, tile=None).upscale_uint8(image))
    assert json.loads((ort_repo / "elan-deploy-repository.json").read_text())["spec"]["runtime"] == "onnxruntime"
