"""A Triton model repository for Triton's own backends (ONNX Runtime, OpenVINO, TensorRT).

Layout written by `elan-deploy triton-repo OUT`:

    OUT/<name>/config.pbtxt            ensemble: `image` UINT8 [N,H,W,3] -> `upscaled` UINT8 [N,sH,sW,3]
    OUT/<name>/1/                      (empty: ensembles have no files, Triton wants the version)
    OUT/<name>-pre/config.pbtxt        Python backend: pad + NCHW float, request checks
    OUT/<name>-pre/1/model.py, prepost.py, geometry.py
    OUT/<name>-net/config.pbtxt        onnxruntime_onnx | openvino | tensorrt_plan, FP32 NCHW 0..255, dims [3,-1,-1]
    OUT/<name>-net/1/model.onnx | model.xml + model.bin | model.plan
    OUT/<name>-post/config.pbtxt       Python backend: crop, round, clip to UINT8 NHWC
    OUT/<name>-post/1/model.py, prepost.py, geometry.py
    OUT/elan-deploy-repository.json    what was written (Triton reads only the model folders)

Clients send the same request to the ensemble as to `elan-deploy serve` and read the output
`upscaled` (an ensemble cannot reuse its input's name for an output). The network model can
also be called directly with float NCHW input whose H and W are multiples of 16.

Configs are built as Triton's own ModelConfig protobuf messages (from tritonclient) and printed
in protobuf text format, so each `config.pbtxt` parses by construction.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from elan_deploy import geometry
from elan_deploy.errors import ElanDeployError, RuntimeUnavailable
from elan_deploy.fileio import atomic_path, missing_folder_error
from elan_deploy.serve.prepost import DEFAULT_MAX_PIXELS

MARKER = "elan-deploy-repository.json"
VERSION = "1"
NET_INPUT, NET_OUTPUT = "lr", "sr"  # the exported ONNX graph's tensor names (export/onnx_export.py)
# An ensemble has one tensor namespace: an output named like its input (`image`) makes Triton wait
# forever for a tensor it already has, so the ensemble answers with `upscaled`.
ENSEMBLE_OUTPUT = "upscaled"
_HERE = Path(__file__).resolve().parent
GEOMETRY_FILE = Path(geometry.__file__)  # prepost.py's padding, shipped beside it

# runtime -> (config key, value, model file(s) in the engine folder, default_model_filename)
BACKENDS: dict[str, tuple[str, str, tuple[str, ...], str]] = {
    "onnxruntime": ("platform", "onnxruntime_onnx", ("model.onnx",), "model.onnx"),
    "openvino": ("backend", "openvino", ("model.xml", "model.bin"), "model.xml"),
    "tensorrt": ("platform", "tensorrt_plan", ("model.plan",), "model.plan"),
}
# Triton's OpenVINO backend has no precision parameter: f32 is its default, `HINT_BF16` asks for
# bf16; INT8 engines run their float parts in bf16, as `elan-deploy build` does.
OPENVINO_PRECISIONS = {"fp32": {}, "bf16": {"HINT_BF16": "YES"}, "int8": {"HINT_BF16": "YES"}}


def model_config_pb2():
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise RuntimeUnavailable("tritonclient is not installed; pip install 'elan-deploy[serve]'") from None
    return model_config_pb2


@dataclass(frozen=True)
class RepositorySpec:
    """What the repository serves and how Triton should schedule it."""

    name: str  # the ensemble's name, which clients call (`elan-light-x4`)
    runtime: str
    precision: str
    max_batch: int = 4
    instances: int = 1  # instances of the network model (instance_group count)
    device: str = "cpu"  # cpu | gpu: where the network's instances run
    max_pixels: int = DEFAULT_MAX_PIXELS
    threads: int | None = None  # OpenVINO INFERENCE_NUM_THREADS / ONNX Runtime intra_op_thread_count
    declared: dict[str, str] = field(default_factory=dict)  # engine facts recorded in the ensemble config

    def check(self) -> None:
        if self.runtime not in BACKENDS:
            raise ElanDeployError(f"triton-repo writes models for {', '.join(BACKENDS)}; got runtime '{self.runtime}'")
        if self.runtime == "openvino" and self.precision not in OPENVINO_PRECISIONS:
            raise ElanDeployError(
                f"Triton's OpenVINO backend runs fp32, bf16 or int8 (it has no fp16 hint); got {self.precision}"
            )
        if self.runtime == "openvino" and self.device != "cpu":
            raise ElanDeployError("Triton's OpenVINO backend runs on the CPU only; drop --device gpu")
        if self.runtime == "tensorrt" and self.device != "gpu":
            raise ElanDeployError("TensorRT plans run on an NVIDIA GPU; pass --device gpu")
        if self.max_batch < 1 or self.instances < 1 or self.max_pixels < 1:
            raise ElanDeployError("--max-batch, --instances and --max-pixels must be 1 or more")

    @property
    def net(self) -> str:
        return f"{self.name}-net"

    @property
    def pre(self) -> str:
        return f"{self.name}-pre"

    @property
    def post(self) -> str:
        return f"{self.name}-post"


def _set_params(config, params: dict[str, str]) -> None:
    for key, value in params.items():
        config.parameters[key].string_value = str(value)


def _batching(config, max_batch: int) -> None:
    config.max_batch_size = max_batch
    # Triton batches only requests of the same shape, which is what one engine call can take.
    config.dynamic_batching.max_queue_delay_microseconds = 2000


def net_config(spec: RepositorySpec):
    pb = model_config_pb2()
    key, value, _, filename = BACKENDS[spec.runtime]
    config = pb.ModelConfig(name=spec.net, default_model_filename=filename)
    setattr(config, key, value)
    _batching(config, spec.max_batch)
    config.input.append(pb.ModelInput(name=NET_INPUT, data_type=pb.TYPE_FP32, dims=[3, -1, -1]))
    config.output.append(pb.ModelOutput(name=NET_OUTPUT, data_type=pb.TYPE_FP32, dims=[3, -1, -1]))
    kind = pb.ModelInstanceGroup.KIND_GPU if spec.device == "gpu" else pb.ModelInstanceGroup.KIND_CPU
    config.instance_group.append(pb.ModelInstanceGroup(count=spec.instances, kind=kind))
    if spec.runtime == "openvino":
        params = {"PERFORMANCE_HINT": "LATENCY", **OPENVINO_PRECISIONS[spec.precision]}
        if spec.threads:
            params["INFERENCE_NUM_THREADS"] = str(spec.threads)
        _set_params(config, params)
    elif spec.runtime == "onnxruntime" and spec.threads:
        _set_params(config, {"intra_op_thread_count": str(spec.threads)})
    return config


def python_config(spec: RepositorySpec, stage: str):
    pb = model_config_pb2()
    config = pb.ModelConfig(name=spec.pre if stage == "pre" else spec.post, backend="python")
    _batching(config, spec.max_batch)
    if stage == "pre":
        config.input.append(pb.ModelInput(name="image", data_type=pb.TYPE_UINT8, dims=[-1, -1, 3]))
        config.output.append(pb.ModelOutput(name=NET_INPUT, data_type=pb.TYPE_FP32, dims=[3, -1, -1]))
        config.output.append(pb.ModelOutput(name="size", data_type=pb.TYPE_INT32, dims=[2]))
    else:
        config.input.append(pb.ModelInput(name=NET_OUTPUT, data_type=pb.TYPE_FP32, dims=[3, -1, -1]))
        config.input.append(pb.ModelInput(name="size", data_type=pb.TYPE_INT32, dims=[2]))
        config.output.append(pb.ModelOutput(name="image", data_type=pb.TYPE_UINT8, dims=[-1, -1, 3]))
    # NumPy pre/post work is light: one CPU instance per network instance keeps the pipeline fed.
    config.instance_group.append(pb.ModelInstanceGroup(count=spec.instances, kind=pb.ModelInstanceGroup.KIND_CPU))
    _set_params(config, {"stage": stage, "max_pixels": str(spec.max_pixels)})
    return config


def ensemble_config(spec: RepositorySpec):
    pb = model_config_pb2()
    config = pb.ModelConfig(name=spec.name, platform="ensemble", max_batch_size=spec.max_batch)
    config.input.append(pb.ModelInput(name="image", data_type=pb.TYPE_UINT8, dims=[-1, -1, 3]))
    config.output.append(pb.ModelOutput(name=ENSEMBLE_OUTPUT, data_type=pb.TYPE_UINT8, dims=[-1, -1, 3]))
    steps = (
        (spec.pre, {"image": "image"}, {NET_INPUT: "padded", "size": "size"}),
        (spec.net, {NET_INPUT: "padded"}, {NET_OUTPUT: "sr_padded"}),
        (spec.post, {NET_OUTPUT: "sr_padded", "size": "size"}, {"image": ENSEMBLE_OUTPUT}),
    )
    for model, inputs, outputs in steps:
        step = config.ensemble_scheduling.step.add(model_name=model, model_version=-1)
        step.input_map.update(inputs)
        step.output_map.update(outputs)
    _set_params(config, {f"elan_deploy.{k}": v for k, v in spec.declared.items()})
    return config


def config_text(config) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(config)


def parse_config(text: str):
    """Parse a config.pbtxt with Triton's ModelConfig message; raises on anything it does not know."""
    from google.protobuf import text_format

    return text_format.Parse(text, model_config_pb2().ModelConfig())


def _is_our_repository(path: Path) -> bool:
    """True when `path` holds only what a previous `triton-repo` wrote (its marker lists every file)."""
    try:
        listed = set(json.loads((path / MARKER).read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    present = {p.relative_to(path).as_posix() for p in path.rglob("*") if not p.is_dir()}
    return present <= listed | {MARKER}


def check_destination(out: Path) -> None:
    """Fail before any build when `out` cannot receive the repository (see `write_repository`)."""
    out = Path(out)
    parent = out.absolute().parent
    if not parent.is_dir():
        raise missing_folder_error(parent, "folder")
    if out.exists() and not (out.is_dir() and not any(out.iterdir())) and not _is_our_repository(out):
        raise ElanDeployError(
            f"'{out}' exists and is not an empty folder or a repository written by elan-deploy; it was left as it is: choose a new path"
        )


def write_repository(out: Path, spec: RepositorySpec, engine_folder: Path) -> list[Path]:
    """Write the repository to `out` atomically; returns the files written (relative to `out`).

    An existing `out` is replaced only when it is empty or a repository this command wrote and
    nobody added to; anything else is refused and left as it is.
    """
    spec.check()
    check_destination(out)
    model_config_pb2()  # fail before any work when tritonclient is missing
    _, _, model_files, _ = BACKENDS[spec.runtime]
    missing = [f for f in model_files if not (engine_folder / f).is_file()]
    if missing:
        raise ElanDeployError(f"engine folder '{engine_folder}' lacks {', '.join(missing)}; rebuild it with `elan-deploy build`")
    with atomic_path(out, directory=True, may_replace=_is_our_repository) as tmp:
        for folder, config in (
            (spec.name, ensemble_config(spec)),
            (spec.pre, python_config(spec, "pre")),
            (spec.net, net_config(spec)),
            (spec.post, python_config(spec, "post")),
        ):
            (tmp / folder / VERSION).mkdir(parents=True)
            (tmp / folder / "config.pbtxt").write_text(config_text(config))
        for name in model_files:
            shutil.copyfile(engine_folder / name, tmp / spec.net / VERSION / name)
        for folder in (spec.pre, spec.post):
            shutil.copyfile(_HERE / "triton_python_model.py", tmp / folder / VERSION / "model.py")
            shutil.copyfile(_HERE / "prepost.py", tmp / folder / VERSION / "prepost.py")
            shutil.copyfile(GEOMETRY_FILE, tmp / folder / VERSION / "geometry.py")
        files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        (tmp / MARKER).write_text(json.dumps({"spec": asdict(spec), "files": files}, indent=2) + "\n")
    return [Path(f) for f in files]
