"""How latency workers allocate memory: glibc malloc told to keep what it frees.

Eager PyTorch mallocs every large intermediate on each call. glibc serves blocks above its
mmap threshold with fresh mmap()s and unmaps them on free, so every inference faults in (and
the kernel zeroes) its whole working set again: on this project's VM, 0.35-0.87 million minor
faults and about a third of eager latency at 1x3x192x320 (BENCHMARKS.md). The count also differs from process to process, so
eager timings drift between runs. PyTorch's CPU launcher (`torch.backends.xeon.run_cpu`)
preloads tcmalloc or jemalloc for this reason; a latency worker gets the same effect without
another library by telling glibc, through mallopt, to serve everything from its heap and never
trim it. ONNX Runtime and OpenVINO keep their own arenas, so the setting barely moves them.
`system` leaves malloc as the C library configures it, which is what a plain process gets.
"""

from __future__ import annotations

import ctypes
import platform
from typing import Literal

Allocator = Literal["keep", "system"]
ALLOCATORS: tuple[Allocator, ...] = ("keep", "system")

_M_TRIM_THRESHOLD = -1  # <malloc.h>: release heap top to the OS only above this many bytes
_M_MMAP_MAX = -4  # <malloc.h>: how many blocks may be served by mmap at once; 0 = none
_INT_MAX = 2**31 - 1


def apply_allocator(allocator: Allocator) -> str:
    """Configure this process's malloc; returns what is in effect, for the results."""
    if allocator == "system":
        return "system"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "system (keep needs glibc)"
    libc = ctypes.CDLL(None)
    if not (libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, _INT_MAX)):
        return "system (mallopt refused)"
    return "keep"
