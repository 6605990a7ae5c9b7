"""One bench run's results document: it validates against the schema and lists every cell."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from elan_deploy.results import SCHEMA_FILE


def test_results_validate_against_the_schema(tiny_bench: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    doc = json.loads((tiny_bench / "results.json").read_text())
    jsonschema.validate(doc, json.loads(SCHEMA_FILE.read_text()))
    kinds = {(r["runtime"], r["precision"], r["kind"]) for r in doc["rows"]}
    assert ("torch", "fp32", "quality") in kinds and ("onnxruntime", "fp16", "latency") in kinds
    assert ("tensorrt", "fp16", "skipped") in kinds  # listed with its reason, never dropped
