"""ONNX export: DeployELAN → TorchScript-traced ONNX → simplified → checked → verified → file.

Exporter choice: the TorchScript exporter (`dynamo=False`). torch 2.13 still ships it (with a
deprecation warning), it needs no onnxscript (not a dependency here), and with `dynamic_axes`
it gives a graph with symbolic N/H/W that onnxsim simplifies to plain default-domain ops.
Opset 17 by default. The TorchScript exporter stops at 20 and lowers SDPA to
MatMul/Softmax/MatMul; for opset 21..23 the traced opset-20 graph is converted with onnx's
version converter, and at 23 the "sdpa" attentions become the fused `Attention` op
(`attention_op`), which ONNX Runtime and OpenVINO both run (no faster on this CPU, so opt-in).

Everything happens in memory and lands in the target through `fileio.atomic_path`: a failure
at any step leaves neither a partial file nor a temp file behind. The bytes are deterministic:
node and tensor names come from module scopes, simplifier bookkeeping is dropped and metadata
is sorted, so exporting twice gives the same file (and the same engine-cache key).
"""

from __future__ import annotations

import hashlib
import io
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch

from elan_deploy import __version__
from elan_deploy.errors import ElanDeployError
from elan_deploy.export.attention_op import ATTENTION_OPSET, TORCHSCRIPT_MAX_OPSET, fuse_attention, upgrade_opset
from elan_deploy.export.config import ExportConfig
from elan_deploy.export.deploy_model import DeployELAN, build_deploy_model
from elan_deploy.export.matmul_weights import store_matmul_weights_out_in
from elan_deploy.export.graph_checks import CORE_ML_MAX_RANK, non_default_domain_ops, op_counts, tensor_ranks
from elan_deploy.export.metadata import ModelMetadata, guard_metadata, set_metadata
from elan_deploy.export.simplify import simplify_model
from elan_deploy.export.verify import max_error_onnxruntime, verify_shapes
from elan_deploy.fileio import atomic_path
from elan_deploy.model.checkpoint import LoadedCheckpoint
from elan_deploy.model.range_guard import RangeGuard, guard_reference

INPUT_NAME = "lr"
OUTPUT_NAME = "sr"
INPUT_RANGE = "0..255"
INPUT_LAYOUT = "NCHW RGB float32"


@dataclass(frozen=True)
class ExportReport:
    """What was written, and the checks it passed."""

    path: Path
    config: ExportConfig
    metadata: ModelMetadata
    node_count: int
    op_counts: dict[str, int]
    size_bytes: int
    sha256: str
    max_rank: int  # largest tensor rank at the traced shape
    max_abs_error: float | None  # ORT vs reference ELAN on probe images (None: verify=False)
    attention_ops: int  # opset-23 Attention nodes (0 below opset 23 or with shared attention)
    seconds: float


def trace_to_onnx(model: DeployELAN, config: ExportConfig) -> onnx.ModelProto:
    """torch.onnx.export (TorchScript, opset ≤ 20) of `model` with dynamic N (optional), H and W."""
    height, width = config.trace_size
    dummy = torch.zeros(1, 3, height, width)
    input_axes = {0: "N", 2: "H", 3: "W"} if config.dynamic_batch else {2: "H", 3: "W"}
    output_axes = {0: "N", 2: "sH", 3: "sW"} if config.dynamic_batch else {2: "sH", 3: "sW"}

    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # the legacy-exporter deprecation notice and TracerWarnings about shape ints are expected
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (dummy,), buffer, dynamo=False, export_params=True, do_constant_folding=True,
            opset_version=min(config.opset, TORCHSCRIPT_MAX_OPSET), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: input_axes, OUTPUT_NAME: output_axes},
        )
    return onnx.load_from_string(buffer.getvalue())


def exporter_name() -> str:
    return f"torch {torch.__version__} torchscript"


def canonicalize(model: onnx.ModelProto, graph_name: str) -> None:
    """Drop fields that vary between runs or tools and say who produced the file."""
    model.producer_name = "elan-deploy"
    model.producer_version = __version__
    model.doc_string = ""
    model.graph.doc_string = ""
    model.graph.name = graph_name
    for node in model.graph.node:
        node.doc_string = ""
    for value in (*model.graph.input, *model.graph.output, *model.graph.value_info):
        value.doc_string = ""
    for init in model.graph.initializer:
        init.doc_string = ""


def check_graph(model: onnx.ModelProto, config: ExportConfig) -> int:
    """ONNX checker (full), default-domain ops only and no tensor above rank 5; returns max rank."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ElanDeployError(f"exported graph fails the ONNX checker: {str(exc).splitlines()[0][:200]}") from None
    foreign = non_default_domain_ops(model)
    if foreign:
        raise ElanDeployError(f"exported graph uses non-default-domain ops {', '.join(foreign)}")
    height, width = config.trace_size
    ranks = tensor_ranks(model, {INPUT_NAME: (1, 3, height, width)})
    if not ranks.within(CORE_ML_MAX_RANK):
        detail = f"unknown ranks for {ranks.unknown[:3]}" if ranks.unknown else f"rank {ranks.max_rank} at {ranks.max_rank_tensors[:2]}"
        raise ElanDeployError(f"exported graph breaks the rank-{CORE_ML_MAX_RANK} limit: {detail}")
    return ranks.max_rank


def export_onnx(loaded: LoadedCheckpoint, output: Path | str, config: ExportConfig | None = None, guard: RangeGuard | None = None) -> ExportReport:
    """Export `loaded` as a verified ONNX file at `output` (atomically; the parent must exist).

    With `guard`, the graph carries the range guard's clamps (`rewrites.range_guard`) and is
    verified against the guarded reference; the ranges are recorded in the metadata.
    """
    config = config or ExportConfig()
    output = Path(output)
    start = time.perf_counter()
    deploy = build_deploy_model(loaded.model, config.shift, config.attention, config.windows, guard=guard)
    reference = loaded.model if guard is None else guard_reference(loaded.model, guard)
    with atomic_path(output) as tmp:
        model = trace_to_onnx(deploy, config)
        simplifier = "none"
        if config.simplify:
            model, simplifier = simplify_model(model)
        store_matmul_weights_out_in(model)
        attention_ops = 0
        if config.opset > TORCHSCRIPT_MAX_OPSET:
            model = upgrade_opset(model, config.opset)
            if config.opset >= ATTENTION_OPSET:
                attention_ops = fuse_attention(model)
        metadata = ModelMetadata(
            model_name=loaded.config.name, model_id=loaded.config.model_id, scale=loaded.config.scale,
            window_multiple=loaded.config.window_multiple, input_range=INPUT_RANGE, input_layout=INPUT_LAYOUT,
            shift=config.shift, attention=config.attention, opset=config.opset,
            checkpoint_sha256=loaded.sha256, elan_deploy_version=__version__, exporter=exporter_name(),
            simplifier=simplifier, windows=config.windows, **guard_metadata(guard),
        )
        canonicalize(model, loaded.config.model_id)
        set_metadata(model, metadata.to_props())
        max_rank = check_graph(model, config)
        data = model.SerializeToString(deterministic=True)
        error = None
        if config.verify:
            error = max_error_onnxruntime(data, reference, verify_shapes(config.trace_size, config.dynamic_batch))
            if not error <= config.tolerance:
                raise ElanDeployError(
                    f"exported graph differs from the reference ELAN by {error:.3g} (> {config.tolerance:g}); "
                    f"nothing was written — try another --shift/--attention and report this"
                )
        tmp.write_bytes(data)
    return ExportReport(
        path=output, config=config, metadata=metadata, node_count=len(model.graph.node), op_counts=op_counts(model),
        size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest(), max_rank=max_rank, max_abs_error=error, attention_ops=attention_ops,
        seconds=time.perf_counter() - start,
    )
