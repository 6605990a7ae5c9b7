"""Latency workers' allocator: glibc malloc told to keep what it frees."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import GLIBC

_FAULTS_PER_MALLOC = """
import ctypes, resource, sys
from elan_deploy.bench.allocator import apply_allocator
print(apply_allocator(sys.argv[1]))
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
size = 48 * 2**20
faults = []
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(ctypes.c_void_p(block))
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sum(faults[1:]))
"""


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_keep_allocator_stops_large_blocks_faulting_in_again() -> None:
    """The reason for `--allocator keep`: with glibc's defaults a freed 48 MB block goes back to the OS."""
    faults = {}
    for allocator in ("system", "keep"):
        done = subprocess.run([sys.executable, "-c", _FAULTS_PER_MALLOC, allocator], capture_output=True, text=True, check=True)
        used, count = done.stdout.split()
        assert used == allocator
        faults[allocator] = int(count)
    assert faults["system"] > 3 * 48 * 2**20 // os.sysconf("SC_PAGE_SIZE") // 2  # every repeat faults its pages in again
    assert faults["keep"] < faults["system"] / 100
