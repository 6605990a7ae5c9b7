"""`elan-deploy loadtest URL`: a bounded load test of a Triton server (serve or triton-repo) with tritonclient."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from elan_deploy.commands.common import positive_int
from elan_deploy.console import fmt, print_table, stderr
from elan_deploy.errors import WorkFailed
from elan_deploy.serve import loadtest
from elan_deploy.serve.request_images import DEFAULT_SIZE


def concurrency_list(text: str) -> list[int]:
    """`4` or `1,2,4`: one run per level, in the order given."""
    try:
        levels = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number or a comma-separated list like 1,2,4") from None
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"concurrency levels must be 1 or more, got {text}")
    return levels


def _settings(args: argparse.Namespace) -> loadtest.LoadtestSettings:
    return loadtest.LoadtestSettings(
        url=args.url, model_name=args.model_name, levels=tuple(args.concurrency), protocol=args.protocol,
        requests=args.requests, warmup=args.warmup, timeout_s=args.timeout, time_limit_s=args.time_limit,
        images=args.images, size=args.size, runtime=args.runtime, precision=args.precision,
        require_engine=args.json is not None,
    )


def _announce(config: loadtest.LoadTestConfig) -> None:
    stderr.print(f"loadtest: {config.requests} requests, concurrency {config.concurrency}, {config.protocol} {config.address}", markup=False)


def _print_results(run: loadtest.LoadtestRun) -> None:
    settings = run.settings
    print_table(
        f"load test: {settings.model_name} at {run.address} ({settings.protocol}), {run.shape or 'mixed sizes'}",
        ("concurrency", "requests", "errors", "req/s", "images/s", "p50 ms", "p90 ms", "p99 ms", "wall s"),
        [
            (r.concurrency, r.sent, r.errors, fmt(r.requests_per_s, 2), fmt(r.images_per_s, 2), fmt(r.percentile(50), 1),
             fmt(r.percentile(90), 1), fmt(r.percentile(99), 1), fmt(r.wall_s, 2))
            for r in run.results
        ],
    )


def run_loadtest(args: argparse.Namespace) -> int:
    settings = _settings(args)
    settings.check()
    if args.json is not None:
        from elan_deploy.provenance import check_output_file

        check_output_file(args.json, "--json", args.overwrite)
    run = loadtest.run_loadtest(settings, on_level=_announce)
    _print_results(run)
    if args.json is not None:
        from elan_deploy.provenance import write_document

        write_document(args.json, run.to_json("elan-deploy " + " ".join(sys.argv[1:])))
        stderr.print(f"wrote {args.json}", markup=False)
    for r in run.results:
        for message in r.error_messages[:2]:
            stderr.print(f"error (concurrency {r.concurrency}): {message}", markup=False)
    if run.failed_requests:
        raise WorkFailed(f"{run.failed_requests} request(s) failed; the first errors are listed above")
    if run.stopped_by_time_limit:
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
