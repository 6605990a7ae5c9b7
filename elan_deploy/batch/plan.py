"""Which inputs go to which outputs, decided once, before anything is written.

Inputs are listed exactly once, up front: outputs written during the run can never become inputs
of the same run. The plan refuses, unless the user passes --overwrite, every output path that is
an input, an output folder that is the input folder (a.jpg would land beside it as a.png), and
outputs that exist but were not written by this tool. Inputs whose names differ only by
extension (a.jpg, a.png) get distinct outputs (a.jpg.png, a.png.png) instead of the last one
winning. A new folder is never created under a name that looks like a file (out.webp).
"""

from __future__ import annotations

import mimetypes
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from elan_deploy.batch.outputs import OUTPUT_FORMATS, OutputState, output_state
from elan_deploy.errors import ElanDeployError
from elan_deploy.imaging import IMAGE_EXTENSIONS, list_images

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv")
OVERWRITE_HINT = "choose another -o, or pass --overwrite to replace it"


@dataclass(frozen=True)
class Job:
    source: Path
    output: Path


@dataclass(frozen=True)
class Plan:
    """The jobs of one run; `folder` is the output folder (created only when something is written)."""

    jobs: tuple[Job, ...]
    folder: Path
    video: bool = False


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def _looks_like_file(name: str) -> bool:
    suffix = Path(name).suffix.lower()
    return bool(suffix) and (
        suffix in OUTPUT_FORMATS or suffix in IMAGE_EXTENSIONS or suffix in VIDEO_EXTENSIONS
        or mimetypes.guess_type(f"x{suffix}")[0] is not None
    )


def check_output_folder(folder: Path) -> None:
    """The folder exists, or can be created (nearest existing parent is a writable folder)."""
    if folder.exists():
        if not folder.is_dir():
            raise ElanDeployError(f"output folder '{folder}' is a file; choose a folder for -o")
        if not os.access(folder, os.W_OK):
            raise ElanDeployError(f"output folder '{folder}' is not writable; choose a writable -o")
        return
    if _looks_like_file(folder.name):
        raise ElanDeployError(
            f"-o '{folder}' names a file type ('{folder.suffix}'), not a folder; "
            f"write one image to .png/.jpg/.bmp/.tif/.webp, or give a folder name without that extension"
        )
    parent = folder.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise ElanDeployError(f"cannot create output folder '{folder}': '{parent}' is not a writable folder; choose a writable -o")


def distinct_names(inputs: list[Path]) -> dict[Path, str]:
    """Output file names: `stem.png`, or `name.png` for every input whose stem another input shares."""
    groups: dict[str, list[Path]] = defaultdict(list)
    for path in inputs:
        groups[path.stem.casefold()].append(path)
    names = {p: (f"{p.stem}.png" if len(group) == 1 else f"{p.name}.png") for group in groups.values() for p in group}
    seen: dict[str, Path] = {}
    for path, name in names.items():
        if name.casefold() in seen:
            raise ElanDeployError(
                f"inputs '{seen[name.casefold()].name}' and '{path.name}' would both write '{name}'; rename one of them"
            )
        seen[name.casefold()] = path
    return names


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def plan_upscale(source: Path, output: Path, overwrite: bool = False) -> Plan:
    """Decide every (input, output) pair and refuse unsafe ones, before any engine or write."""
    if not source.exists():
        raise ElanDeployError(f"input '{source}' does not exist; pass an image file, a folder of images or a video")
    if source.is_dir():
        plan = _plan_folder(source, output, overwrite)
    elif is_video(source):
        plan = _plan_single(source, output, VIDEO_EXTENSIONS, video=True)
    else:
        plan = _plan_single(source, output, tuple(OUTPUT_FORMATS), video=False)
    if not overwrite:
        _refuse_inputs_as_outputs(plan)
        _refuse_foreign_outputs(plan)
    return plan


def _plan_folder(source: Path, output: Path, overwrite: bool) -> Plan:
    inputs = list_images(source)
    if not inputs:
        raise ElanDeployError(f"folder '{source}' holds no PNG/JPEG/BMP/TIFF images")
    if output.suffix.lower() in OUTPUT_FORMATS and not output.is_dir():
        raise ElanDeployError(f"input '{source}' is a folder, so -o must be a folder, not '{output.name}'")
    check_output_folder(output)
    if not overwrite and _same_file(source, output):
        raise ElanDeployError(
            f"output folder '{output}' is the input folder: outputs would replace or land among the inputs; {OVERWRITE_HINT}"
        )
    names = distinct_names(inputs)
    return Plan(tuple(Job(p, output / names[p]) for p in inputs), output)


def _plan_single(source: Path, output: Path, extensions: tuple[str, ...], video: bool) -> Plan:
    kind = "video" if video else "image"
    if output.is_dir():
        check_output_folder(output)
        name = source.name if video else f"{source.stem}.png"
        return Plan((Job(source, output / name),), output, video)
    suffix = output.suffix.lower()
    if suffix in extensions:
        folder = output.parent if str(output.parent) else Path(".")
        if not folder.is_dir():
            raise ElanDeployError(f"output folder '{folder}' does not exist; create it first or choose another -o")
        if not os.access(folder, os.W_OK):
            raise ElanDeployError(f"output folder '{folder}' is not writable; choose a writable -o")
        return Plan((Job(source, output),), folder, video)
    if suffix and _looks_like_file(output.name):
        names = ", ".join(extensions)
        raise ElanDeployError(f"cannot write the {kind} to '{output.name}': '{output.suffix}' is not a format for {kind}s; use {names}")
    check_output_folder(output)
    name = source.name if video else f"{source.stem}.png"
    return Plan((Job(source, output / name),), output, video)


def _refuse_inputs_as_outputs(plan: Plan) -> None:
    for job in plan.jobs:
        if job.output.resolve() == job.source.resolve() or _same_file(job.output, job.source):
            raise ElanDeployError(f"output '{job.output}' is the input itself; {OVERWRITE_HINT}")
    inputs = {(s.st_dev, s.st_ino) for s in (j.source.stat() for j in plan.jobs)}
    for job in plan.jobs:
        try:
            st = job.output.stat()
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in inputs:
            raise ElanDeployError(f"output '{job.output}' is one of the inputs; {OVERWRITE_HINT}")


def _refuse_foreign_outputs(plan: Plan) -> None:
    """Outputs that exist and that this tool did not write are never replaced without --overwrite."""
    foreign = [j.output for j in plan.jobs if output_state(j.output) is OutputState.FOREIGN]
    if foreign:
        raise ElanDeployError(
            f"{len(foreign)} output(s) exist that elan-deploy did not write (first: '{foreign[0]}'); "
            f"nothing was written: {OVERWRITE_HINT}"
        )


def refuse_other_outputs(jobs: list[Job], states: list[OutputState]) -> None:
    """After the settings are known: outputs of another input or other settings are not replaced silently."""
    other = [j.output for j, s in zip(jobs, states) if s is OutputState.OTHER]
    if other:
        raise ElanDeployError(
            f"{len(other)} output(s) exist that elan-deploy wrote from another input or with other settings "
            f"(model, runtime, precision, shapes or tiling; first: '{other[0]}'); nothing was written: {OVERWRITE_HINT}"
        )
