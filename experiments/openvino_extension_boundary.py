#!/usr/bin/env python
"""What a custom OpenVINO op at the window code's boundary would cost before it computes anything.

    python -m experiments.openvino_extension_boundary [ONNX or IR .xml | --int8] [--precision bf16] [--shape 1x3x192x320] [--iters 7]

A fused window-attention kernel would be an OpenVINO extension op taking each GMSA's projection
(channel-last, as the gather windows read it) and returning the merged result before
`project_out`. This script puts an identity extension op (Python `openvino.Op`, its
`evaluate` one copy) at exactly those two points of every GMSA and profiles the model with and
without them, interleaved. The CPU plugin runs an extension op as a `Reference` node in plain
layout and f32, so it inserts Reorders around it (bf16/u8 → f32 and back): the Reorder time that
appears is the boundary cost a real kernel would pay on top of its own work; the `Reference`
time is only the identity's copy, which a real kernel would replace.

Without a model argument the default export of the bundled model is used; `--int8` takes the
shipped OpenVINO INT8 model instead (the NNCF IR the toolkit caches, quantized on first use).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from functools import partial
from pathlib import Path


def identity_op_class():
    """An identity extension op; built lazily so that importing this file does not need OpenVINO."""
    import openvino as ov

    class BoundaryIdentity(ov.Op):
        class_type_info = ov.DiscreteTypeInfo("BoundaryIdentity", "elan_deploy")

        def __init__(self, inputs=None) -> None:  # noqa: ANN001
            super().__init__(self, inputs)
            if inputs:
                self.constructor_validate_and_infer_types()

        def validate_and_infer_types(self) -> None:
            self.set_output_type(0, self.get_input_element_type(0), self.get_input_partial_shape(0))

        def clone_with_new_inputs(self, new_inputs):  # noqa: ANN001, ANN201
            return BoundaryIdentity(new_inputs)

        def get_type_info(self):  # noqa: ANN201
            return BoundaryIdentity.class_type_info

        def evaluate(self, outputs, inputs) -> bool:  # noqa: ANN001
            outputs[0].shape = inputs[0].shape
            inputs[0].copy_to(outputs[0])
            return True

        def has_evaluate(self) -> bool:
            return True

        def visit_attributes(self, visitor) -> bool:  # noqa: ANN001
            return True

    return BoundaryIdentity


def insert_boundaries(model, op_class) -> int:  # noqa: ANN001
    """Identity ops after each GMSA's projection Transpose (input) and before its back-Transpose (output)."""
    inserted = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Transpose" or "/gmsas." not in op.get_friendly_name():
            continue
        source = op.input_value(0).get_node()
        consumers = [t.get_node() for t in op.output(0).get_target_inputs()]
        if "project_inp" in source.get_friendly_name():  # projection → window code
            targets = list(op.output(0).get_target_inputs())
            boundary = op_class([op.output(0)])
            for target in targets:
                target.replace_source_output(boundary.output(0))
            inserted += 1
        elif any("project_out" in c.get_friendly_name() for c in consumers):  # merged windows → project_out
            op.input(0).replace_source_output(op_class([op.input_value(0)]).output(0))
            inserted += 1
    return inserted


def int8_nodes(compiled) -> int:  # noqa: ANN001  (an ov.CompiledModel)
    """Convolution and MatMul nodes that run in u8/i8 in `compiled`."""
    count = 0
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "layerType" in info and info["layerType"].astype(str) in ("Convolution", "MatMul"):
            count += info["runtimePrecision"].astype(str) in ("u8", "i8")
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("onnx", nargs="?", type=Path, help="exported ONNX or OpenVINO IR (default: export the bundled model)")
    parser.add_argument("--int8", action="store_true", help="the shipped OpenVINO INT8 (NNCF) model of the default export instead")
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--shape", default="1x3x192x320")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)
    if args.onnx is not None and args.int8:
        parser.error("give a model file or --int8, not both")
    if args.onnx is not None and not args.onnx.is_file():
        parser.error(f"no such model file: {args.onnx}")

    import openvino as ov

    from elan_deploy.bench.latency import time_interleaved
    from elan_deploy.calibration.nncf_int8 import nncf_int8_model
    from elan_deploy.export import parse_shape
    from elan_deploy.model import load_bundled
    from elan_deploy.runtimes import ModelSource
    from elan_deploy.runtimes.openvino_graph import node_times
    from elan_deploy.scratch import cache_root, temporary_dir
    from experiments.openvino_profile import export_named, natural_image

    shape = tuple(parse_shape(args.shape))
    op_class = identity_op_class()
    core = ov.Core()
    core.add_extension(op_class)
    x = natural_image(shape)
    cells = []
    with temporary_dir("elan-ov-boundary") as folder:  # an export lives only until compiled
        if args.int8:
            source = ModelSource(load_bundled(), work_dir=cache_root() / "onnx")
            read = lambda: nncf_int8_model(source)  # noqa: E731  (the cached IR, read afresh)
        else:
            path = args.onnx or export_named("depthwise/shared/gather", folder)
            read = lambda: core.read_model(str(path))  # noqa: E731
        for with_boundaries in (False, True):
            model = read()
            model.reshape({model.input(0): ov.PartialShape(list(shape))})
            inserted = insert_boundaries(model, op_class) if with_boundaries else 0
            config = {"INFERENCE_PRECISION_HINT": args.precision, "INFERENCE_NUM_THREADS": args.threads,
                      "PERFORMANCE_HINT": "LATENCY", "PERF_COUNT": True}
            compiled = core.compile_model(model, "CPU", config)
            cells.append({"inserted": inserted, "compiled": compiled, "request": compiled.create_infer_request(),
                          "int8": int8_nodes(compiled), "ms": [], "reorder": [], "reference": [], "total": []})

    def read_profile(i: int) -> None:  # the per-node counters of the run just timed, before the next overwrites them
        cell = cells[i]
        times = node_times(cell["compiled"])
        cell["reorder"].append(times.per_type_us.get("Reorder", 0.0) / 1e3)
        cell["reference"].append(times.per_type_us.get("Reference", 0.0) / 1e3)
        cell["total"].append(times.total_us / 1e3)

    calls = {i: partial(cell["request"].infer, {0: x}) for i, cell in enumerate(cells)}
    for i, seconds in time_interleaved(calls, args.iters, warmup=args.warmup, after_run=read_profile).items():
        cells[i]["ms"] = [t * 1e3 for t in seconds]

    print("| model | extension ops | INT8 conv/MatMul nodes | Reorder ms | extension op (identity copy) ms | all nodes ms | p50 (min) ms |")
    print("|---|---|---|---|---|---|---|")
    for cell, name in zip(cells, ("as exported", "with boundary ops")):
        med = {k: statistics.median(cell[k]) for k in ("reorder", "reference", "total", "ms")}
        print(f"| {name} | {cell['inserted']} | {cell['int8']} | {med['reorder']:.1f} | {med['reference']:.1f} | {med['total']:.1f} | "
              f"{med['ms']:.1f} ({min(cell['ms']):.1f}) |")
    added = statistics.median(cells[1]["reorder"]) - statistics.median(cells[0]["reorder"])
    print(f"\nReorders added by {cells[1]['inserted']} extension-op boundaries: {added:.1f} ms "
          f"({100 * added / statistics.median(cells[0]['total']):.1f} % of the model's node time); "
          f"{args.precision}, shape {args.shape}, {args.threads} threads, {args.iters} timed runs after {args.warmup}, "
          f"OpenVINO {ov.get_version()}, cpu: {core.get_property('CPU', 'FULL_DEVICE_NAME')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
