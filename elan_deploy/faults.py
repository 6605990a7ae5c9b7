"""Fault injection for the crash-safety tests: die by SIGKILL at a named point.

Crash safety is a property of the whole command (a rerun after a kill must succeed and trust
nothing half-written), so the tests run real commands and kill them where it hurts most: just
before an artifact is renamed into place. A point is named like `publish:model.onnx`;
`ELAN_DEPLOY_KILL_AT=PATTERN[@N]` (fnmatch, N-th match, default 1) kills the process there.
`ELAN_DEPLOY_FAULT_LOG=FILE` appends every point reached, so a test can count, across
processes, how often something was built. With neither variable set this costs one lookup.
"""

from __future__ import annotations

import fnmatch
import os
import signal

KILL_ENV = "ELAN_DEPLOY_KILL_AT"
LOG_ENV = "ELAN_DEPLOY_FAULT_LOG"
_hits: dict[str, int] = {}


def point(name: str) -> None:
    """Mark a crash-relevant point; kill the process here when the environment asks for it."""
    if log := os.environ.get(LOG_ENV):
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"{os.getpid()} {name}\n")
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return
    pattern, _, nth = spec.partition("@")
    if fnmatch.fnmatchcase(name, pattern):
        _hits[pattern] = _hits.get(pattern, 0) + 1
        if _hits[pattern] == int(nth or 1):
            os.kill(os.getpid(), signal.SIGKILL)
