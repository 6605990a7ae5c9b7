"""Export: the reference ELAN rewritten into `DeployELAN`, then a verified ONNX file.

    from elan_deploy.export import ExportConfig, export_onnx, build_deploy_model
    report = export_onnx(load_bundled(), Path("elan-light-x4.onnx"), ExportConfig(shift="slice"))

Rewrites live in `elan_deploy.export.rewrites`, one module per pattern; `deploy_model`
assembles them; `onnx_export` traces, simplifies, checks, verifies and writes atomically;
`graph_checks` and `metadata` read ONNX files back (used by `elan-deploy info`).

Names are resolved lazily (PEP 562) so that `elan_deploy.export.strategies`, which the CLI
parser needs, can be imported without importing torch and onnx.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "ATTENTION_STRATEGIES": "strategies",
    "DEFAULT_OPSET": "strategies",
    "SHIFT_STRATEGIES": "strategies",
    "WINDOW_STRATEGIES": "strategies",
    "ExportConfig": "config",
    "DeployELAN": "deploy_model",
    "build_deploy_model": "deploy_model",
    "GraphSummary": "graph_checks",
    "RankReport": "graph_checks",
    "TensorSpec": "graph_checks",
    "parse_shape": "graph_checks",
    "summarize": "graph_checks",
    "tensor_ranks": "graph_checks",
    "ModelMetadata": "metadata",
    "read_metadata": "metadata",
    "read_props": "metadata",
    "INPUT_NAME": "onnx_export",
    "OUTPUT_NAME": "onnx_export",
    "ExportReport": "onnx_export",
    "export_onnx": "onnx_export",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'elan_deploy.export' has no attribute '{name}'")
    value = getattr(importlib.import_module(f"elan_deploy.export.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from elan_deploy.export.config import ExportConfig
    from elan_deploy.export.deploy_model import DeployELAN, build_deploy_model
    from elan_deploy.export.graph_checks import GraphSummary, RankReport, TensorSpec, parse_shape, summarize, tensor_ranks
    from elan_deploy.export.metadata import ModelMetadata, read_metadata, read_props
    from elan_deploy.export.onnx_export import INPUT_NAME, OUTPUT_NAME, ExportReport, export_onnx
    from elan_deploy.export.strategies import ATTENTION_STRATEGIES, DEFAULT_OPSET, SHIFT_STRATEGIES, WINDOW_STRATEGIES
