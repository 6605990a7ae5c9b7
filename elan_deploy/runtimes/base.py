"""The one small interface every runtime implements (see DESIGN.md), and its value types.

A runtime turns the exported ONNX (the hand-over point) into an engine file and loads it into
an `Engine`: a callable on N,3,H,W float32 0..255 arrays whose H and W are multiples of 16.
Padding, tiling and colour handling live once, in `elan_deploy.upscale.Upscaler`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from elan_deploy.choices import Choice
from elan_deploy.errors import ElanDeployError
from elan_deploy.geometry import DEFAULT_TILE, MULTIPLE

if TYPE_CHECKING:  # source.py pulls in the export code; the protocol only names the type
    from elan_deploy.runtimes.source import ModelSource


class Precision(Choice):
    """Toolkit-wide precision names; each runtime maps them to its own spelling."""

    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    INT8 = "int8"


Shape = tuple[int, int, int, int]
_SHAPE = re.compile(r"^(\d+)x(\d+)x(\d+)x(\d+)$")


def parse_shape(text: str) -> Shape:
    m = _SHAPE.match(text.strip().lower())
    if not m:
        raise ElanDeployError(f"bad shape '{text}'; write NxCxHxW, e.g. 1x3x192x320")
    shape = tuple(int(v) for v in m.groups())
    if shape[1] != 3 or shape[0] < 1 or shape[2] % MULTIPLE or shape[3] % MULTIPLE or not shape[2] or not shape[3]:
        raise ElanDeployError(f"bad shape '{text}': need N>=1, C=3 and H, W positive multiples of {MULTIPLE}")
    return shape  # type: ignore[return-value]


@dataclass(frozen=True)
class ShapeRange:
    """Input shapes an engine is built for: min/opt/max (TensorRT profiles, OpenVINO bounds).

    `min == opt == max` means a static engine, which the benchmark found up to 60 % faster on
    OpenVINO; the Upscaler's fixed tile size makes static shapes practical.
    """

    min: Shape
    opt: Shape
    max: Shape

    @classmethod
    def static(cls, shape: Shape) -> ShapeRange:
        return cls(shape, shape, shape)

    @classmethod
    def parse(cls, text: str) -> ShapeRange:
        """`1x3x192x320` (static) or `min:opt:max`."""
        parts = [parse_shape(p) for p in text.split(":")]
        if len(parts) == 1:
            return cls.static(parts[0])
        if len(parts) != 3:
            raise ElanDeployError(f"bad shapes '{text}'; write one shape or min:opt:max")
        lo, opt, hi = parts
        if not all(a <= b <= c for a, b, c in zip(lo, opt, hi)):
            raise ElanDeployError(f"bad shapes '{text}': need min <= opt <= max in every dimension")
        return cls(lo, opt, hi)

    @property
    def is_static(self) -> bool:
        return self.min == self.max

    def contains(self, shape: tuple[int, ...]) -> bool:
        return all(a <= s <= b for a, s, b in zip(self.min, shape, self.max))

    def __str__(self) -> str:
        fmt = lambda s: "x".join(map(str, s))  # noqa: E731
        return fmt(self.opt) if self.is_static else f"{fmt(self.min)}:{fmt(self.opt)}:{fmt(self.max)}"


DEFAULT_SHAPES = ShapeRange.parse("1x3x16x16:1x3x192x320:4x3x512x512")
# One Upscaler tile: the default of a runtime whose engines take one H x W (Core ML); the
# Upscaler tiles every image at that shape.
TILE_SHAPES = ShapeRange.static((1, 3, DEFAULT_TILE, DEFAULT_TILE))


@dataclass
class EngineInfo:
    """What a measurement must record about the engine that produced it."""

    runtime: str
    runtime_version: str
    precision: Precision
    precision_used: str  # as reported back by the runtime, e.g. OpenVINO's resolved hint
    threads: int | None = None
    device: str = "CPU"
    details: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class Engine(Protocol):
    info: EngineInfo

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """N,3,H,W float32 0..255 (H, W multiples of 16) -> N,3,sH,sW float32."""
        ...


@dataclass(frozen=True)
class BuildOptions:
    """Runtime-independent settings for building and loading an engine.

    `threads` is applied when an engine is loaded; no runtime writes it into the engine file,
    so it stays out of the cache key and one cached engine (an INT8 one costs minutes of
    calibration) serves every thread count. `on_phase` hears what a long build is doing (INT8's
    calibration and searches: "probe 3/24 ...") for the command's build step; it changes nothing
    built.
    """

    threads: int | None = None
    on_phase: Callable[[str], None] | None = field(default=None, compare=False, repr=False)

    def cache_key(self) -> str:
        """The settings that change the engine file: none of today's."""
        return repr({f.name: getattr(self, f.name) for f in fields(self) if f.name not in LOAD_ONLY_OPTIONS})


LOAD_ONLY_OPTIONS = frozenset({"threads", "on_phase"})


@runtime_checkable
class Runtime(Protocol):
    """What `EngineLoader` (runtimes/loader.py), the only caller, uses of a runtime.

    Runtimes that convert the model write an engine file with `build` and read it with `load`;
    runtimes that run the checkpoint itself (`needs_build` False: torch, torch-compile) have no
    file and `open` the model source directly. `RuntimeDefaults` supplies the half a runtime
    does not use, so every runtime has the whole interface and nothing is probed with getattr.
    """

    name: str
    extra: str  # pip extra that installs it
    precisions: tuple[Precision, ...]
    needs_build: bool
    default_shapes: ShapeRange  # engine shapes when the user gives none

    def check(self) -> None:
        """Raise RuntimeUnavailable naming the missing package/hardware and the install hint."""
        ...

    def version(self) -> str: ...

    def build(self, source: ModelSource, precision: Precision, shapes: ShapeRange, out: Path, options: BuildOptions) -> None:
        """Write an engine into the folder `out` (the cache publishes the folder atomically)."""
        ...

    def load(self, engine: Path, precision: Precision, shapes: ShapeRange, options: BuildOptions) -> Engine:
        """The engine in a folder `build` wrote."""
        ...

    def open(self, source: ModelSource, precision: Precision, options: BuildOptions) -> Engine:
        """The engine straight from the model source (runtimes without an engine file)."""
        ...


class RuntimeDefaults:
    """The defaults of a runtime that builds an engine file: `open` is the other kind's method."""

    name: str
    needs_build = True
    default_shapes = DEFAULT_SHAPES

    def open(self, source: ModelSource, precision: Precision, options: BuildOptions) -> Engine:
        raise ElanDeployError(f"runtime '{self.name}' runs an engine file: build it, then load it (EngineLoader does both)")


def check_input(x: np.ndarray, multiple: int = MULTIPLE) -> np.ndarray:
    if x.ndim != 4 or x.shape[1] != 3:
        raise ElanDeployError(f"engine input must be N,3,H,W; got shape {tuple(x.shape)}")
    if x.shape[2] % multiple or x.shape[3] % multiple:
        raise ElanDeployError(f"engine input H, W must be multiples of {multiple}; got {x.shape[2]}x{x.shape[3]} (use the Upscaler, which pads)")
    return np.ascontiguousarray(x, dtype=np.float32)
