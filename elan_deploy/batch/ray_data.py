"""The Ray Data driver: a pool of actors, each holding one engine, upscales a list of images.

The driver plans and skips (see `plan` and `outputs`) exactly as the plain loop does; Ray sees
only the jobs still to do, one image per block so a slow or lost image holds up no other. Each
actor opens the engine once (from the shared engine cache, see `EngineLoader`) and runs the same
per-image step as the plain path (`work.process_job`), so both paths write identical, atomically
written PNGs and report through the same `FileResult` contract. A bad file is a failed row, not
a failed task. An actor whose process dies is restarted and its in-flight image retried: Ray
Data's actor pool sets `max_restarts=-1` and `max_task_retries=-1` itself (Ray 2.60 deprecates
passing them through `ray_remote_args`), and the rerun of a lost image is safe because outputs are
only ever renamed into place complete.

Without an address a private local instance is started with this machine's CPUs: every one of
its processes listens on 127.0.0.1 only, no dashboard is started, and all of it is stopped when
the run ends, fails, is interrupted or is killed (see `ray_instance`). An address joins that
cluster, whose nodes must see the input and output folders at the same paths; nothing of it is
ever stopped. A Ray session the calling process already holds (`ray.init` before) is used as it
is and left running.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from elan_deploy.batch.extras import require
from elan_deploy.batch.plan import Job
from elan_deploy.batch.ray_instance import private_instance
from elan_deploy.batch.results import FileResult
from elan_deploy.batch.work import UpscaleSettings, process_job
from elan_deploy.runtimes import EngineLoader
from elan_deploy.errors import ElanDeployError, WorkFailed

class UpscaleWorker:
    """Ray Data actor: opens the engine once, then upscales the rows it is handed."""

    def __init__(self, loader: EngineLoader, settings: UpscaleSettings, job_digest: str) -> None:
        self.upscaler = settings.upscaler(loader.open())
        self.job_digest = job_digest

    def __call__(self, batch: dict[str, Sequence[str]]) -> dict[str, list[str]]:
        rows = [
            process_job(Job(Path(str(src)), Path(str(dst))), self.upscaler, self.job_digest).to_row()
            for src, dst in zip(batch["source"], batch["output"])
        ]
        return {key: [row[key] for row in rows] for key in ("source", "output", "status", "reason", "notes")}


@contextmanager
def ray_session(address: str | None) -> Iterator[object]:
    """Join `address`, start a private local instance, or use the session this process holds."""
    ray = require("ray")
    if ray.is_initialized():
        yield ray
        return
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
    with ExitStack() as stack:
        try:
            if address:
                ray.init(address=address, include_dashboard=False, **quiet)
                stack.callback(ray.shutdown)  # disconnects this driver; the cluster keeps running
            else:
                stack.enter_context(private_instance(ray, os.cpu_count() or 1, **quiet))
        except (ConnectionError, ValueError, RuntimeError) as exc:
            where = f"the Ray cluster at '{address}'" if address else "a local Ray instance"
            raise ElanDeployError(f"cannot start or join {where}: {' '.join(str(exc).split())}") from None
        yield ray


def pool_size(ray: object, actors: int | None) -> tuple[int, float]:
    """(actors, CPUs per actor): by default one actor per two CPUs of the cluster."""
    cpus = float(ray.cluster_resources().get("CPU", 1.0))  # type: ignore[attr-defined]
    count = actors or max(1, int(cpus // 2))
    return count, max(cpus / count, 0.01)


def run_ray(
    jobs: Sequence[Job],
    loader: EngineLoader,
    settings: UpscaleSettings,
    job_digest: str,
    address: str | None = None,
    actors: int | None = None,
    on_result: Callable[[FileResult], None] | None = None,
) -> list[FileResult]:
    """Upscale `jobs` on a Ray actor pool; returns one FileResult per job (in completion order)."""
    results: list[FileResult] = []
    if not jobs:
        return results
    with ray_session(address) as ray:
        data = require("ray.data")
        ctx = data.DataContext.get_current()
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # our progress bar and summary replace its logs
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        ctx.enable_auto_log_stats = False
        count, cpus_each = pool_size(ray, actors)
        if loader.threads is None:
            loader = loader.with_threads(max(1, int(cpus_each)))
        items = [{"source": str(j.source), "output": str(j.output)} for j in jobs]
        dataset = data.from_items(items, override_num_blocks=len(items)).map_batches(
            UpscaleWorker,
            fn_constructor_kwargs={"loader": loader, "settings": settings, "job_digest": job_digest},
            batch_size=1,
            compute=data.ActorPoolStrategy(size=min(count, len(items))),
            num_cpus=cpus_each,
        )
        try:
            for row in dataset.iter_rows():
                result = FileResult.from_row(row)
                results.append(result)
                if on_result is not None:
                    on_result(result)
        except Exception as exc:  # noqa: BLE001 - Ray wraps worker deaths and bugs in many types
            first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            raise WorkFailed(
                f"the Ray run stopped after {len(results)} of {len(jobs)} image(s) ({type(exc).__name__}: {first.strip()}); "
                "the outputs written are complete, and a rerun resumes with the rest"
            ) from None
    return results
