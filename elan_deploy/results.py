"""The results schema shared by `eval` and `bench`.

A results file is `{"schema": "elan-deploy/results/1", "machine": {...}, "rows": [...]}` with
flat rows so that tables, JSON diffs and plots read them the same way. Every row records what
produced its number: runtime and version, the precision actually used, threads, machine.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import torch

import elan_deploy
from elan_deploy.cpu import cpu_caps_detected, cpu_id, cpu_model
from elan_deploy.provenance import write_document

SCHEMA_ID = "elan-deploy/results/1"
SCHEMA_FILE = Path(__file__).with_name("results_schema.json")  # JSON Schema of the document


def machine_info() -> dict[str, Any]:
    """What a reader needs to reproduce or discount a number."""
    import os

    return {
        "cpu": cpu_model(),
        "cpu_id": cpu_id(),
        "cores": os.cpu_count(),
        "isa": sorted(set(cpu_caps_detected().isa)),
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
    write_document(path, results_document(rows))


class RowKind(str, Enum):
    """What a row holds: a quality score, a latency measurement, why a cell did not run, or a load-test level."""

    QUALITY = "quality"
    LATENCY = "latency"
    SKIPPED = "skipped"  # a known limit: a missing runtime, the CPU plan, --quick, the time limit
    FAILED = "failed"  # a crash in that cell; the other cells still ran
    LOADTEST = "loadtest"  # one concurrency level of `serve loadtest`: read as a plain Row


@dataclass(frozen=True)
class Row:
    """A typed view of one row of a results document; `data` is the row as written (kept for the round trip)."""

    data: dict[str, Any]

    @property
    def kind(self) -> RowKind:
        return RowKind(self.data.get("kind", "quality"))  # eval rows carry no kind: they are quality rows

    @property
    def cell(self) -> str:
        return f"{self.runtime} {self.precision}"

    @property
    def model(self) -> str:
        """The model id every row of a run shares; the report's title."""
        return self.data["model"]

    @property
    def runtime(self) -> str:
        """The runtime asked for (`torch`, `onnxruntime`, ...): half of the cell's name."""
        return self.data["runtime"]

    @property
    def precision(self) -> str:
        """The precision asked for; `precision_used` says what the engine really ran."""
        return self.data["precision"]

    @property
    def precision_used(self) -> str | None:
        """What the engine reported it ran (a runtime may fall back to fp32); None where no engine opened."""
        return self.data.get("precision_used")

    @property
    def threads(self) -> int | None:
        """Intra-op threads the engine reported; None where no engine opened."""
        return self.data.get("threads")

    @property
    def guard(self) -> str | None:
        """`guarded` (features clamped to their T91 ranges) or `unguarded`; None in eval rows."""
        return self.data.get("guard")

    @property
    def shift(self) -> str | None:
        """Export form of the shift; None for torch cells, which run the model without an export."""
        return self.data.get("shift")

    @property
    def attention(self) -> str | None:
        """Export form of the attention; None for torch cells."""
        return self.data.get("attention")

    def get(self, key: str, default: Any = None) -> Any:
        """A field without a property of its own (a display column such as `engine_rss_mb`), as written."""
        return self.data.get(key, default)


@dataclass(frozen=True)
class QualityRow(Row):
    @property
    def dataset(self) -> str:
        return self.data["dataset"]

    @property
    def images(self) -> int:
        """How many images the scores average over."""
        return self.data["images"]

    @property
    def psnr(self) -> float:
        return float(self.data["psnr"])

    @property
    def ssim(self) -> float:
        return float(self.data["ssim"])

    @property
    def fidelity_psnr(self) -> float | None:
        """PSNR against the reference cell's output ("inf" when identical); None where no reference ran."""
        value = self.data.get("fidelity_psnr")
        return None if value is None else float(value)


@dataclass(frozen=True)
class LatencyRow(Row):
    @property
    def shape(self) -> str:
        return self.data["shape"]

    @property
    def engine_shape(self) -> str:
        """The shape the static engine was built for: `shape` padded to what the model's windows need."""
        return self.data["engine_shape"]

    @property
    def p50_ms(self) -> float:
        return float(self.data["p50_ms"])

    @property
    def min_ms(self) -> float:
        return float(self.data["min_ms"])

    @property
    def p90_ms(self) -> float:
        """90th percentile of the timed runs, all rounds together."""
        return float(self.data["p90_ms"])

    @property
    def iterations(self) -> int:
        """Timed runs, all rounds together (warm-up runs not counted)."""
        return self.data["iterations"]

    @property
    def p99_ms(self) -> float:
        """99th percentile of the timed runs."""
        return float(self.data["p99_ms"])

    @property
    def rounds(self) -> int:
        """Interleaved timing rounds; 1 in rows written before rounds were recorded."""
        return self.data.get("rounds", 1)

    @property
    def max_ms(self) -> float:
        """The slowest timed run."""
        return float(self.data["max_ms"])

    @property
    def allocator(self) -> str | None:
        """The malloc the latency worker ran with; None in rows written before it was recorded."""
        return self.data.get("allocator")


@dataclass(frozen=True)
class NotRunRow(Row):
    """A skipped or failed cell."""

    @property
    def reason(self) -> str:
        return self.data.get("reason", "")

    @property
    def shape(self) -> str | None:
        """The latency shape it was skipped or failed at; None where the whole cell did not run."""
        return self.data.get("shape")


_ROW_TYPES = {RowKind.QUALITY: QualityRow, RowKind.LATENCY: LatencyRow, RowKind.SKIPPED: NotRunRow, RowKind.FAILED: NotRunRow,
              RowKind.LOADTEST: Row}


@dataclass
class ResultsDoc:
    """A results document (`bench` results.json, `eval --json`) read back with typed rows.

    `load` then `save` writes the same JSON: the document keeps every field it was written with,
    so documents from earlier versions load as they are (`compare OLD NEW`).
    """

    data: dict[str, Any]
    rows: list[Row]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ResultsDoc:
        if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
            raise ValueError("not an elan-deploy results document (no rows)")
        rows = []
        for raw in data["rows"]:
            row = Row(raw)
            rows.append(_ROW_TYPES[row.kind](raw))
        return cls(data, rows)

    @classmethod
    def of(cls, doc: ResultsLike) -> ResultsDoc:
        """The typed view of a document given either as read from JSON or already typed, so that readers
        which call each other wrap the dict once."""
        return doc if isinstance(doc, ResultsDoc) else cls.from_json(doc)

    @classmethod
    def load(cls, path: Path | str) -> ResultsDoc:
        import json

        return cls.from_json(json.loads(Path(path).read_text()))

    def to_json(self) -> dict[str, Any]:
        return {**self.data, "rows": [row.data for row in self.rows]}

    def save(self, path: Path | str) -> None:
        write_document(path, self.to_json())

    @property
    def machine(self) -> dict[str, Any]:
        return self.data.get("machine", {})

    def quality(self, dataset: str | None = None) -> list[QualityRow]:
        return [r for r in self.rows if isinstance(r, QualityRow) and (dataset is None or r.dataset == dataset)]

    def latency(self, shape: str | None = None) -> list[LatencyRow]:
        return [r for r in self.rows if isinstance(r, LatencyRow) and (shape is None or r.shape == shape)]

    def not_run(self) -> list[NotRunRow]:
        return [r for r in self.rows if isinstance(r, NotRunRow)]


ResultsLike = dict[str, Any] | ResultsDoc  # what readers accept: a document as read from JSON, or its typed view
