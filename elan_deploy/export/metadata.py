"""What an exported ONNX file says about itself (`metadata_props`).

Everything downstream (calibration, runtimes, the Upscaler, reports) reads the model's scale,
window multiple and input range from the file rather than from a side channel, and engine
caches key on the checkpoint hash and toolkit version recorded here.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

import onnx

from typing import TYPE_CHECKING

from elan_deploy.errors import ElanDeployError

if TYPE_CHECKING:  # the guard module imports torch; reading metadata must not
    from elan_deploy.model.range_guard import RangeGuard


@dataclass(frozen=True)
class ModelMetadata:
    """The metadata of an ELAN ONNX file; field names are the `metadata_props` keys."""

    model_name: str  # e.g. "elan-light"
    model_id: str  # e.g. "elan-light-x4"
    scale: int
    window_multiple: int  # input H and W must be multiples of this
    input_range: str  # "0..255"
    input_layout: str  # "NCHW RGB float32"
    shift: str
    attention: str
    opset: int
    checkpoint_sha256: str
    elan_deploy_version: str
    exporter: str  # e.g. "torch 2.13.0+cpu torchscript"
    simplifier: str  # e.g. "onnxsim 0.8.1" or "none"
    # added later: files written before these fields existed read back with the defaults
    windows: str = "reshape"
    range_guard: str = "none"  # what the clamps' ranges were measured on, and their sha256; "none" = the paper model
    range_guard_ranges: str = ""  # the ranges themselves (RangeGuard JSON), so the file describes its own clamps

    def to_props(self) -> dict[str, str]:
        return {key: str(value) for key, value in asdict(self).items()}

    @classmethod
    def from_props(cls, props: dict[str, str]) -> "ModelMetadata":
        required = [f for f in fields(cls) if f.default is MISSING]
        missing = [f.name for f in required if f.name not in props]
        if missing:
            raise ElanDeployError(f"ONNX file lacks elan-deploy metadata {missing[:3]}; export it with `elan-deploy export`")
        values: dict[str, object] = {}
        for f in fields(cls):
            if f.name not in props:
                continue
            raw = props[f.name]
            values[f.name] = int(raw) if f.type in ("int", int) else raw
        return cls(**values)  # type: ignore[arg-type]


def guard_metadata(guard: RangeGuard | None) -> dict[str, str]:
    """The `range_guard` fields of the metadata for a guard (or for the unguarded paper model)."""
    if guard is None:
        return {"range_guard": "none", "range_guard_ranges": ""}
    text = json.dumps(guard.to_json(), separators=(",", ":"))
    return {"range_guard": f"{guard.source}; sha256 {guard.digest[:16]}", "range_guard_ranges": text}


def guard_from_metadata(props: dict[str, str]) -> RangeGuard | None:
    """The range guard an exported file carries, or None for an unguarded (or older) file."""
    from elan_deploy.model.range_guard import RangeGuard

    text = props.get("range_guard_ranges", "")
    return RangeGuard.from_json(json.loads(text)) if text else None


def set_metadata(model: onnx.ModelProto, props: dict[str, str]) -> None:
    """Replace all `metadata_props` with `props` (sorted keys, for byte-stable files).

    Simplifiers add their own bulky, run-specific entries; those are dropped.
    """
    del model.metadata_props[:]
    for key in sorted(props):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(props[key])


def read_props(model: onnx.ModelProto | Path | str) -> dict[str, str]:
    """All `metadata_props` of a model (or file) as a dict; weights are not loaded for files."""
    if not isinstance(model, onnx.ModelProto):
        path = Path(model)
        if not path.is_file():
            raise ElanDeployError(f"ONNX file '{path}' does not exist")
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # noqa: BLE001 - protobuf raises several types for a bad file
            raise ElanDeployError(f"'{path}' is not a readable ONNX file ({type(exc).__name__})") from None
    return {p.key: p.value for p in model.metadata_props}


def read_metadata(model: onnx.ModelProto | Path | str) -> ModelMetadata:
    """The typed elan-deploy metadata of a model or file (ElanDeployError if absent)."""
    return ModelMetadata.from_props(read_props(model))
