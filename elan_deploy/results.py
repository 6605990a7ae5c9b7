"""The results schema shared by `eval` and `bench`.

A results file is `{"schema": "elan-deploy/results/1", "machine": {...}, "rows": [...]}` with
flat rows so that tables, JSON diffs and plots read them the same way. Every row records what
produced its number: runtime and version, the precision actually used, threads, machine.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import elan_deploy
from elan_deploy.fileio import write_json_atomic

SCHEMA_ID = "elan-deploy/results/1"
SCHEMA_FILE = Path(__file__).with_name("results_schema.json")  # JSON Schema of the document


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_id() -> str | None:
    """CPU family/model/stepping: VMs often name every generation just "AMD EPYC", and these tell them apart."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("cpu family", "model", "stepping"):
                fields.setdefault(key.strip(), value.strip())
            elif not line.strip() and fields:
                break
    except OSError:
        return None
    if len(fields) < 3:
        return None
    return f"family {fields['cpu family']} model {fields['model']} stepping {fields['stepping']}"


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def machine_info() -> dict[str, Any]:
    """What a reader needs to reproduce or discount a number."""
    import os

    from elan_deploy.cpu import cpu_caps_detected

    flags = cpu_flags()
    return {
        "cpu": cpu_model(),
        "cpu_id": cpu_id(),
        "cores": os.cpu_count(),
        "isa": sorted(set(cpu_caps_detected().isa) | {f for f in flags if f in {"amx_int8", "avx_vnni"}}),
        "os": platform.platform(),
        "python": platform.python_version(),
        "elan_deploy": elan_deploy.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
    }


@dataclass
class ResultRow:  # `kind` and per-kind fields travel in `extra`; see results_schema.json
    """One runtime × precision × dataset measurement. Optional fields stay None when not measured."""

    model: str
    runtime: str
    precision: str
    dataset: str
    images: int
    psnr: float | None = None
    ssim: float | None = None
    runtime_version: str | None = None
    precision_used: str | None = None
    threads: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        row = asdict(self)
        extra = row.pop("extra")
        row.update(extra)
        return {k: v for k, v in row.items() if v is not None}


def results_document(rows: list[ResultRow]) -> dict[str, Any]:
    return {"schema": SCHEMA_ID, "machine": machine_info(), "rows": [r.to_json() for r in rows]}


def write_results(path: Path | str, rows: list[ResultRow]) -> None:
    write_json_atomic(path, results_document(rows))
