"""How much memory one image's work may take, and what it will take: the Upscaler refuses a
tile (or a whole-image run) that cannot fit before any tile runs, and says which tile fits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from elan_deploy.cpu import mem_available
from elan_deploy.errors import ElanDeployError

# Peak working set of an engine per LR pixel of its input, once warm: the growth of peak RSS
# over four calls of ELAN-light x4 fp32 on 128 and 256 px tiles (AMD EPYC Zen 4, 2 threads;
# attention maps dominate): ONNX Runtime 7.2-7.4 KB (its second call allocates the planned
# memory pattern beside the first call's arena), torch 6.7-7.2 KB, OpenVINO 6.0-6.5 KB. The
# largest, so a 256x256 tile is budgeted at ~480 MB whatever the runtime.
BYTES_PER_LR_PIXEL = 7500
# What a process holding an engine needs besides its tiles (Python, numpy, the runtime, the
# weights): ~300 MB measured for ONNX Runtime, OpenVINO and torch. Counted only against an
# explicit $ELAN_DEPLOY_MAX_MEMORY: the OS's available memory already excludes it.
PROCESS_BASE_BYTES = 300 * 2**20
MAX_MEMORY_ENV = "ELAN_DEPLOY_MAX_MEMORY"


def _parse_bytes(text: str) -> int:
    """'2G', '512M', '1.5GiB' or a plain number of bytes."""
    units = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    cleaned = text.strip().upper().removesuffix("IB").removesuffix("B")
    number, unit = (cleaned[:-1], cleaned[-1]) if cleaned[-1:] in units and cleaned[-1:] else (cleaned, "")
    try:
        value = float(number) * units[unit]
    except (ValueError, KeyError):
        raise ElanDeployError(f"{MAX_MEMORY_ENV}='{text}' is not a size; write e.g. 4G or 512M") from None
    if value <= 0:
        raise ElanDeployError(f"{MAX_MEMORY_ENV}='{text}' must be positive; write e.g. 4G or 512M")
    return int(value)


def _cgroup_room() -> int | None:
    """Memory left under this process's cgroup (v2) limit, if it has one."""
    try:
        line = Path("/proc/self/cgroup").read_text().splitlines()[0]
        folder = Path("/sys/fs/cgroup") / line.split("::", 1)[1].lstrip("/")
        limit = (folder / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int((folder / "memory.current").read_text())
    except (OSError, IndexError, ValueError):
        return None


def available_memory() -> int:
    """Bytes one image's work may take: $ELAN_DEPLOY_MAX_MEMORY (a cap on the whole process)
    less the process's own base if set, else what the OS reports available (MemAvailable, and
    the room under the cgroup limit where one applies)."""
    if os.environ.get(MAX_MEMORY_ENV):
        return _parse_bytes(os.environ[MAX_MEMORY_ENV]) - PROCESS_BASE_BYTES
    room: list[int] = []
    available = mem_available()
    if available is not None:
        room.append(available)
    cgroup = _cgroup_room()
    if cgroup is not None:
        room.append(cgroup)
    if not room:  # no /proc (macOS): physical memory
        try:
            room.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        except (ValueError, OSError, AttributeError):
            return 2**62
    return min(room)


def gib(value: float) -> str:
    return f"{value / 2**30:.1f} GiB"


@dataclass(frozen=True)
class MemoryEstimate:
    """What one image will take, split so that the error can say what to change."""

    engine: int  # one batch of tiles (or the whole padded image) through the engine
    output: int  # the stitched output, plus its encoder's copy for uint8 outputs
    other: int  # padded input and one tile's float temporaries

    @property
    def total(self) -> int:
        return self.engine + self.output + self.other
