"""`elan-deploy serve`: serve the Upscaler with any engine on a real Triton Inference Server."""

from __future__ import annotations

import argparse
import dataclasses
import math

from elan_deploy.commands.common import (
    add_engine_args, add_model_args, add_tiling_args, loader_from_args, positive_int, resolve_auto_engine, warn_if_precision_differs, with_first_use_steps,
)
from elan_deploy.console import stderr
from elan_deploy.serve.prepost import DEFAULT_MAX_PIXELS
from elan_deploy.serve.server import DEFAULT_DRAIN_TIMEOUT_S
from elan_deploy.upscale import Upscaler


def port(text: str) -> int:
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a port is 1..65535, got {value}")
    return value


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of seconds") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def run_serve(args: argparse.Namespace) -> int:
    from elan_deploy.runtimes import Precision
    from elan_deploy.serve.server import ServeOptions, UpscaleHandler, check_ports_free, serve

    options = ServeOptions(
        model_name=args.model_name or "elan", host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
        metrics_port=args.metrics_port, max_batch=args.max_batch, max_pixels=args.max_pixels,
        drain_timeout_s=args.drain_timeout,
    )
    options.check()  # bad flags and taken ports fail before the engine is built (the default name is checked below)
    check_ports_free(options.host, options.ports)
    Upscaler(None, args.scale, tile=args.tile or None, overlap=args.overlap)  # checks --tile/--overlap
    resolve_auto_engine(args)
    loader = loader_from_args(args)
    source, engine, shapes = loader.source, with_first_use_steps(loader, loader.open), loader.engine_shapes
    warn_if_precision_differs(engine.info, args.precision)
    declared = {
        "model": source.model_id, "scale": str(source.scale), "runtime": engine.info.runtime,
        "precision": Precision.parse(engine.info.precision).value, "precision_used": engine.info.precision_used,
        "built_with": f"{engine.info.runtime} {engine.info.runtime_version}", "engine_shapes": str(shapes),
    }
    options = dataclasses.replace(options, model_name=args.model_name or source.model_id, declared=declared)
    upscaler = Upscaler(
        engine, source.scale, tile=args.tile or None, overlap=args.overlap, batch=args.batch,
        shapes=shapes if shapes.is_static else None, multiple=source.size_rules.multiple,
    )
    stderr.print(f"engine: {engine.info.runtime} {engine.info.runtime_version} {engine.info.precision_used}", markup=False)
    return serve(options, UpscaleHandler(upscaler.upscale_uint8, args.max_pixels), lambda line: stderr.print(line, markup=False))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="serve the upscaler on a Triton Inference Server (HTTP, gRPC, metrics)",
        description="Serve one Triton model: input `image` UINT8 [N,H,W,3] RGB, output `image` UINT8 [N,sH,sW,3].",
    )
    add_model_args(p)
    add_engine_args(p, default_runtime="auto", default_precision="auto")
    add_tiling_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 for every interface [127.0.0.1]")
    p.add_argument("--http-port", type=port, default=8000, help="HTTP/REST port [8000]")
    p.add_argument("--grpc-port", type=port, default=8001, help="gRPC port [8001]")
    p.add_argument("--metrics-port", type=port, default=8002, help="Prometheus metrics port [8002]")
    p.add_argument("--max-batch", type=positive_int, default=4, help="largest batch (images per request, and per dynamic batch) [4]")
    p.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS, help=f"largest request in LR pixels, N*H*W [{DEFAULT_MAX_PIXELS}]")
    p.add_argument("--drain-timeout", type=seconds, default=DEFAULT_DRAIN_TIMEOUT_S,
                   help=f"on SIGINT/SIGTERM, seconds the running request gets to finish; the others are refused [{DEFAULT_DRAIN_TIMEOUT_S:g}]")
    p.add_argument("--model-name", help="Triton model name [the model id, e.g. elan-light-x4]")
    p.set_defaults(handler=run_serve)
