"""`elan-deploy loadtest URL`: a bounded load test of a Triton server (serve or triton-repo) with tritonclient."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

from elan_deploy.commands.common import positive_int
from elan_deploy.console import fmt, print_table, stderr
from elan_deploy.errors import ElanDeployError, WorkFailed

DEFAULT_SIZE = "64x64"


def concurrency_list(text: str) -> list[int]:
    """`4` or `1,2,4`: one run per level, in the order given."""
    try:
        levels = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number or a comma-separated list like 1,2,4") from None
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"concurrency levels must be 1 or more, got {text}")
    return levels


def parse_size(text: str) -> tuple[int, int] | None:
    if text == "full":
        return None
    m = re.fullmatch(r"(\d+)x(\d+)", text)
    if not m or 0 in (int(m.group(1)), int(m.group(2))):
        raise ElanDeployError(f"--size must be HxW with positive H and W (e.g. 64x64) or 'full', got '{text}'")
    return int(m.group(1)), int(m.group(2))


def load_request_images(folder: Path | None, size: tuple[int, int] | None) -> tuple[list[np.ndarray], str]:
    """HxWx3 uint8 images for the requests (centre crops of `size`), and the dataset label for the results."""
    from elan_deploy.imaging import list_images, read_image

    if folder is None:
        from elan_deploy.calibration.data import BUNDLED_SAMPLES

        folder, label = BUNDLED_SAMPLES, "bundled-samples"
    else:
        if not folder.is_dir():
            raise ElanDeployError(f"--images '{folder}' is not a folder of images")
        label = folder.name
    images = []
    for path in list_images(folder):
        image = read_image(path)
        if size is not None:
            h, w = size
            if image.shape[0] < h or image.shape[1] < w:
                continue
            top, left = (image.shape[0] - h) // 2, (image.shape[1] - w) // 2
            image = np.ascontiguousarray(image[top : top + h, left : left + w])
        images.append(image)
    if not images:
        raise ElanDeployError(f"no image in '{folder}' is at least {size} pixels; pass --size smaller or 'full'")
    return images, label


def declared_version(declared: dict[str, str]) -> str | None:
    """The runtime version a server declares in `built_with` ("onnxruntime 1.32.0"), if any."""
    built_with = declared.get("built_with", "")
    return built_with.split(" ", 1)[1] if " " in built_with else None


def run_loadtest(args: argparse.Namespace) -> int:
    from elan_deploy.results import ResultRow, results_document
    from elan_deploy.serve.loadtest import LoadTestConfig, TritonImageClient, run_load

    configs = [
        LoadTestConfig(
            url=args.url, model_name=args.model_name, protocol=args.protocol, concurrency=level, requests=args.requests,
            warmup=args.warmup, timeout_s=args.timeout, time_limit_s=args.time_limit,
        )
        for level in args.concurrency
    ]
    for config in configs:
        config.check()
    if args.json is not None:
        from elan_deploy.provenance import check_output_file

        check_output_file(args.json, "--json", args.overwrite)
    if args.precision is not None:
        from elan_deploy.runtimes import Precision

        Precision.parse(args.precision)
    images, dataset = load_request_images(args.images, parse_size(args.size))
    probe = TritonImageClient(configs[0])
    input_name, output_name, declared = probe.describe()
    probe.close()
    runtime = declared.get("runtime") or args.runtime
    precision = declared.get("precision") or args.precision
    if args.json is not None and (runtime is None or precision is None):
        raise ElanDeployError(
            f"model '{args.model_name}' does not declare its engine; pass --runtime and --precision "
            "(as given to `elan-deploy serve`) so the JSON says what was measured"
        )
    shapes = {img.shape for img in images}
    shape = f"1x3x{images[0].shape[0]}x{images[0].shape[1]}" if len(shapes) == 1 else None

    rows, results = [], []
    for config in configs:
        stderr.print(f"loadtest: {config.requests} requests, concurrency {config.concurrency}, {config.protocol} {config.address}", markup=False)
        result = run_load(config, images, (input_name, output_name))
        results.append(result)
        extra = {
            "kind": "loadtest", "protocol": config.protocol, "url": config.address, "concurrency": config.concurrency,
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
        rows.append(
            ResultRow(
                model=declared.get("model", args.model_name), runtime=runtime or "unknown", precision=precision or "unknown",
                dataset=dataset, images=len(images), runtime_version=declared_version(declared),
                precision_used=declared.get("precision_used") or None, extra=extra,
            )
        )

    print_table(
        f"load test: {args.model_name} at {configs[0].address} ({args.protocol}), {shape or 'mixed sizes'}",
        ("concurrency", "requests", "errors", "req/s", "images/s", "p50 ms", "p90 ms", "p99 ms", "wall s"),
        [
            (r.concurrency, r.sent, r.errors, fmt(r.requests_per_s, 2), fmt(r.images_per_s, 2), fmt(r.percentile(50), 1),
             fmt(r.percentile(90), 1), fmt(r.percentile(99), 1), fmt(r.wall_s, 2))
            for r in results
        ],
    )
    if args.json is not None:
        from elan_deploy.fileio import write_json_atomic

        document = results_document(rows)
        document["command"] = "elan-deploy " + " ".join(sys.argv[1:])
        write_json_atomic(args.json, document)
        stderr.print(f"wrote {args.json}", markup=False)
    failed = sum(r.errors for r in results)
    for r in results:
        for message in r.error_messages[:2]:
            stderr.print(f"error (concurrency {r.concurrency}): {message}", markup=False)
    if failed:
        raise WorkFailed(f"{failed} request(s) failed; the first errors are listed above")
    if any(r.stopped_by_time_limit for r in results):
        raise WorkFailed(f"--time-limit {args.time_limit:g} s stopped the run before all requests were sent")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("loadtest", help="bounded load test of a Triton server: throughput, p50/p90/p99, errors")
    p.add_argument("url", help="server address HOST:PORT (http: the HTTP port, grpc: the gRPC port)")
    p.add_argument("--concurrency", type=concurrency_list, default=[1], help="parallel clients, or a list like 1,2,4 [1]")
    p.add_argument("--requests", type=positive_int, default=50, help="requests per concurrency level (one image each) [50]")
    p.add_argument("--images", type=Path, help="folder of request images [the bundled T91 samples]")
    p.add_argument("--size", default=DEFAULT_SIZE, help=f"centre-crop every image to HxW, or 'full' [{DEFAULT_SIZE}]")
    p.add_argument("--protocol", choices=("http", "grpc"), default="http", help="[http]")
    p.add_argument("--model-name", default="elan-light-x4", help="model to call [elan-light-x4]")
    p.add_argument("--warmup", type=int, default=2, help="untimed requests first [2]")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request [60]")
    p.add_argument("--time-limit", type=float, default=300.0, help="no request starts after this many seconds [300]")
    p.add_argument("--runtime", help="engine runtime, for the JSON, when the model does not declare it (serve and triton-repo models do)")
    p.add_argument("--precision", help="engine precision, for the JSON, when the model does not declare it (serve and triton-repo models do)")
    p.add_argument("--json", type=Path, help="write the results document here")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file even if this tool did not write it")
    p.set_defaults(handler=run_loadtest)
