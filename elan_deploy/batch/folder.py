"""The plain driver: images one after another in this process, for folders of any size."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from elan_deploy.batch.plan import Job
from elan_deploy.batch.results import FileResult
from elan_deploy.batch.work import process_job
from elan_deploy.upscale import Upscaler


def run_plain(
    jobs: Sequence[Job], upscaler: Upscaler, job_digest: str, on_result: Callable[[FileResult], None] | None = None
) -> list[FileResult]:
    """Upscale every job; a bad input becomes a failed result and the loop goes on."""
    results = []
    for job in jobs:
        result = process_job(job, upscaler, job_digest)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results
