"""Which inputs go to which outputs, decided once, before anything is written.

Inputs are listed exactly once, up front: outputs written during the run can never become inputs
of the same run. A folder's subfolders are inputs only with --recursive; the outputs then mirror
the input's subfolder layout under the output folder, and an output folder inside the input tree
is never read as input. Subfolders and non-image files left out are counted for the summary.

The plan refuses, unless the user passes --overwrite, every output path that is an input, an
output folder that is the input folder (a.jpg would land beside it as a.png), and outputs that
exist but were not written by this tool. Inputs in one folder whose names differ only by
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
from elan_deploy.imaging import IMAGE_EXTENSIONS

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
    skipped_subfolders: int = 0  # subfolders of an input folder left out (no --recursive)
    skipped_files: int = 0  # files of an input folder that are not images

    def skipped_note(self) -> str | None:
        """The summary line for what an input folder held besides its images, or None."""
        parts = [_count(self.skipped_subfolders, "subfolder"), _count(self.skipped_files, "non-image file")]
        said = " and ".join(p for p in parts if p)
        if not said:
            return None
        return f"{said} skipped" + ("; --recursive includes subfolders" if self.skipped_subfolders else "")


def _count(n: int, noun: str) -> str:
    return "" if n == 0 else f"{n} {noun}{'' if n == 1 else 's'}"


@dataclass(frozen=True)
class FolderListing:
    """The images of an input folder, by the folder that holds them, and what was left out."""

    images: dict[Path, list[Path]]  # folder -> its images (sorted), folders in walk order
    subfolders: int = 0
    other_files: int = 0

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.images.values())


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


def _real(path: Path) -> Path | None:
    try:
        return path.resolve(strict=True)
    except (OSError, RuntimeError):
        return None


def list_folder(source: Path, recursive: bool = False, exclude: Path | None = None) -> FolderListing:
    """The images under `source` (hidden files and folders skipped), listed once, sorted per folder.

    With `recursive`, subfolders are walked too; a folder reached twice (through a link) is read
    once, and `exclude` (an output folder inside the input tree) is never entered.
    """
    images: dict[Path, list[Path]] = {}
    subfolders = other_files = 0
    excluded = _real(exclude) if exclude is not None else None
    seen: set[Path] = set()
    pending = [source]
    while pending:
        folder = pending.pop(0)
        real = _real(folder)
        if real is None or real in seen:
            continue
        seen.add(real)
        found, below = [], []
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith("."):  # editor/OS droppings, our own temporaries and records
                continue
            if entry.is_dir():
                if excluded is not None and _real(entry) == excluded:
                    continue
                below.append(entry)
            elif entry.is_file() and entry.suffix.lower() in IMAGE_EXTENSIONS:
                found.append(entry)
            else:
                other_files += 1
        if found:
            images[folder] = found
        if recursive:
            pending[:0] = below  # depth first, in name order
        else:
            subfolders += len(below)
    return FolderListing(images, subfolders, other_files)


def plan_upscale(source: Path, output: Path, overwrite: bool = False, recursive: bool = False) -> Plan:
    """Decide every (input, output) pair and refuse unsafe ones, before any engine or write."""
    if not source.exists():
        raise ElanDeployError(f"input '{source}' does not exist; pass an image file, a folder of images or a video")
    if recursive and not source.is_dir():
        raise ElanDeployError(f"--recursive reads folders; '{source}' is a file (drop --recursive)")
    if source.is_dir():
        plan = _plan_folder(source, output, overwrite, recursive)
    elif is_video(source):
        plan = _plan_single(source, output, VIDEO_EXTENSIONS, video=True)
    else:
        plan = _plan_single(source, output, tuple(OUTPUT_FORMATS), video=False)
    if not overwrite:
        _refuse_inputs_as_outputs(plan)
        _refuse_foreign_outputs(plan)
    return plan


def _plan_folder(source: Path, output: Path, overwrite: bool, recursive: bool) -> Plan:
    if output.suffix.lower() in OUTPUT_FORMATS and not output.is_dir():
        raise ElanDeployError(f"input '{source}' is a folder, so -o must be a folder, not '{output.name}'")
    check_output_folder(output)
    same = _same_file(source, output)
    if not overwrite and same:
        raise ElanDeployError(
            f"output folder '{output}' is the input folder: outputs would replace or land among the inputs; {OVERWRITE_HINT}"
        )
    listing = list_folder(source, recursive, exclude=None if same else output)
    if not listing.count:
        hint = " (its subfolders were not read: pass --recursive)" if listing.subfolders else ""
        raise ElanDeployError(f"folder '{source}' holds no PNG/JPEG/BMP/TIFF images{hint}")
    jobs = []
    for folder, images in listing.images.items():
        names = distinct_names(images)
        target = output / folder.relative_to(source)
        jobs += [Job(p, target / names[p]) for p in images]
    return Plan(tuple(jobs), output, skipped_subfolders=listing.subfolders, skipped_files=listing.other_files)


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
