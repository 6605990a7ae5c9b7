"""`elan-deploy triton-repo OUT`: a Triton model repository for Triton's ONNX Runtime, OpenVINO or TensorRT backend."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from elan_deploy.commands.common import add_engine_args, add_model_args, loader_from_args, positive_int
from elan_deploy.console import print_table, stderr
from elan_deploy.errors import ElanDeployError
from elan_deploy.serve.prepost import DEFAULT_MAX_PIXELS


def run_triton_repo(args: argparse.Namespace) -> int:
    from elan_deploy.serve.repository import ENSEMBLE_OUTPUT, RepositorySpec, check_destination, model_config_pb2, write_repository

    device = args.device or ("gpu" if args.runtime == "tensorrt" else "cpu")
    spec = RepositorySpec(
        name=args.model_name or "elan", runtime=args.runtime, precision=args.precision, max_batch=args.max_batch,
        instances=args.instances, device=device, max_pixels=args.max_pixels, threads=args.threads,
    )
    spec.check()  # flags, the output folder and tritonclient are checked before any build
    check_destination(args.output)
    model_config_pb2()
    loader = loader_from_args(args)
    shapes = loader.engine_shapes
    if shapes.min[2:] == shapes.max[2:]:
        raise ElanDeployError(f"--shapes {shapes} fixes H and W, but the repository takes any size: pass a min:opt:max range")
    if shapes.max[0] < args.max_batch:
        raise ElanDeployError(f"--max-batch {args.max_batch} exceeds the engine's largest batch {shapes.max[0]} in --shapes {shapes}")
    source = loader.source
    folder = loader.build()
    declared = {
        "model": source.model_id, "scale": str(source.scale), "runtime": args.runtime, "precision": args.precision,
        "built_with": f"{args.runtime} {loader.backend().version()}", "engine_shapes": str(shapes),
    }
    spec = dataclasses.replace(spec, name=args.model_name or source.model_id, declared=declared)
    files = write_repository(args.output, spec, folder)
    print_table(
        f"Triton model repository {args.output}", ("file", "what"),
        [(f.as_posix(), _describe(f, spec)) for f in files],
    )
    stderr.print(
        f"clients call '{spec.name}': input image UINT8 [N,H,W,3], output {ENSEMBLE_OUTPUT} UINT8 [N,{source.scale}H,{source.scale}W,3]; "
        f"run: tritonserver --model-repository {Path(args.output).resolve()}",
        markup=False,
    )
    return 0


def _describe(path: Path, spec) -> str:
    model = path.parts[0]
    role = {spec.name: "ensemble", spec.pre: "pre-processing", spec.post: "post-processing", spec.net: f"network ({spec.runtime} {spec.precision})"}
    return f"{role.get(model, model)}: {path.name}"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "triton-repo", help="write a Triton model repository (onnxruntime, openvino or tensorrt backend + ensemble)",
        description="Write a Triton model repository: the network for Triton's own backend, NumPy pre/post-processing "
        "models and an ensemble that takes the same UINT8 [N,H,W,3] `image` as `elan-deploy serve`.",
    )
    p.add_argument("output", type=Path, help="repository folder to create (must not exist, or be empty)")
    add_model_args(p)
    add_engine_args(p)
    p.add_argument("--model-name", help="name clients call (the ensemble) [the model id, e.g. elan-light-x4]")
    p.add_argument("--max-batch", type=positive_int, default=4, help="max_batch_size of every model [4]")
    p.add_argument("--instances", type=positive_int, default=1, help="instances of the network (instance_group count) [1]")
    p.add_argument("--device", choices=("cpu", "gpu"), help="where the network's instances run [gpu for tensorrt, else cpu]")
    p.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS, help=f"largest request in LR pixels, N*H*W [{DEFAULT_MAX_PIXELS}]")
    p.set_defaults(handler=run_triton_repo)
