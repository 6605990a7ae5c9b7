"""One image in, one output out: the step every driver (folder loop, Ray actor) runs per input."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path

from elan_deploy.batch.outputs import OutputTag, file_sha256, write_output
from elan_deploy.batch.plan import Job
from elan_deploy.batch.results import FileResult, run_guarded
from elan_deploy.imaging import read_image
from elan_deploy.runtimes import BuildOptions, Engine, ModelSource, ShapeRange
from elan_deploy.upscale import Upscaler


@dataclass(frozen=True)
class UpscaleSettings:
    """How the Upscaler runs; the same values on every path give the same pixels."""

    scale: int
    tile: int | None
    overlap: int
    batch: int
    shapes: ShapeRange | None  # static engine shapes the tiles must match, else None

    def upscaler(self, engine: Engine) -> Upscaler:
        return Upscaler(engine, self.scale, tile=self.tile, overlap=self.overlap, batch=self.batch, shapes=self.shapes)


@dataclass(frozen=True)
class EngineRecipe:
    """Enough to open the driver's engine again in another process (a Ray actor).

    The engine file the driver built lies in the shared engine cache (`folder`); an actor loads
    it from there without building. Where that path is not visible (a cluster node without the
    shared cache) or the runtime has no engine file (torch), the actor opens the engine from the
    model source through its own cache.
    """

    runtime: str
    precision: str
    shapes: ShapeRange
    threads: int | None
    folder: str | None
    source: ModelSource

    def with_threads(self, threads: int | None) -> EngineRecipe:
        return replace(self, threads=threads)

    def open(self) -> Engine:
        from elan_deploy.runtimes import EngineCache, Precision, get_runtime, open_engine
        from elan_deploy.scratch import cache_root

        options = BuildOptions(threads=self.threads)
        if self.folder and Path(self.folder).exists():
            return get_runtime(self.runtime).load(Path(self.folder), Precision.parse(self.precision), self.shapes, options)
        cache = EngineCache(cache_root() / "engines")
        return open_engine(self.source, self.runtime, self.precision, self.shapes, options, cache)


def upscale_image_file(job: Job, upscaler: Upscaler, job_digest: str) -> tuple[str, ...]:
    """Read, upscale and write one image atomically; returns the reader's warnings as notes."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = read_image(job.source, keep_gray=True)
    pixels = upscaler.upscale_uint8(image)
    tag = OutputTag(file_sha256(job.source), job_digest, int(pixels.shape[1]), int(pixels.shape[0]))
    write_output(job.output, pixels, tag)
    return tuple(str(w.message) for w in caught)


def process_job(job: Job, upscaler: Upscaler, job_digest: str) -> FileResult:
    return run_guarded(job.source, job.output, lambda: upscale_image_file(job, upscaler, job_digest))
