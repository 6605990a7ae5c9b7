"""One image in, one output out: the step every driver (folder loop, Ray actor) runs per input."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from elan_deploy.batch.outputs import OutputTag, file_sha256, write_output
from elan_deploy.batch.plan import Job
from elan_deploy.batch.results import FileResult, run_guarded
from elan_deploy.geometry import MULTIPLE
from elan_deploy.imaging import read_image
from elan_deploy.runtimes import Engine, ShapeRange
from elan_deploy.upscale import OutputRange, Upscaler


@dataclass(frozen=True)
class UpscaleSettings:
    """How the Upscaler runs; the same values on every path give the same pixels."""

    scale: int
    tile: int | None
    overlap: int
    batch: int
    shapes: ShapeRange | None  # static engine shapes the tiles must match, else None
    multiple: int = MULTIPLE  # the model's input multiple (`ModelSource.size_rules`)

    def upscaler(self, engine: Engine) -> Upscaler:
        return Upscaler(engine, self.scale, tile=self.tile, overlap=self.overlap, batch=self.batch, shapes=self.shapes, multiple=self.multiple)


def upscale_image_file(job: Job, upscaler: Upscaler, job_digest: str) -> tuple[str, ...]:
    """Read, upscale and write one image atomically; returns as notes the reader's warnings and, for an
    image that drove the model far off its training domain, that its output may show artifacts."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = read_image(job.source, keep_gray=True)
    observed = OutputRange()
    pixels = upscaler.upscale_uint8(image, observed)
    tag = OutputTag(file_sha256(job.source), job_digest, int(pixels.shape[1]), int(pixels.shape[0]))
    write_output(job.output, pixels, tag)
    notes = [str(w.message) for w in caught]
    return (*notes, off_domain) if (off_domain := observed.off_domain_note(job.source.name)) else tuple(notes)


def process_job(job: Job, upscaler: Upscaler, job_digest: str) -> FileResult:
    return run_guarded(job.source, job.output, lambda: upscale_image_file(job, upscaler, job_digest))
