"""Where the INT8 engines lose fidelity on raw hard-edged inputs: variants of the ONNX Q/DQ recipe.

    python -m experiments.int8_stress_fidelity [--variants default,budget-only,matmuls-float,minmax,inputs-float] [--threads 2]

The range guard asks INT8 engines for at least 30 dB of fidelity to the guarded FP32 model on
the stress set's raw inputs. This runs ONNX Runtime on the guarded model's Q/DQ file in five
variants and prints each raw stress image's PSNR against guarded PyTorch FP32:
- `default`: the recipe as `build --runtime onnxruntime --precision int8` makes it (entropy
  ranges on T91, the float groups its search keeps under the 0.05 dB budget, then those that
  hold 30 dB on held-out T91 cut to saturated colours: `calibration.sensitivity`);
- `budget-only`: the same without the hard-edge floor (the recipe before it);
- `matmuls-float`: the budget-only ranges and float set, with every attention MatMul also float
  (is the error in the attention's quantized q, map or v?);
- `minmax`: min-max ranges instead of entropy, its own budget-only search (does clipping at
  the entropy threshold cost the hard edges?). Calibrating and searching take minutes; the
  file is cached;
- `inputs-float`: the budget-only ranges and float set, with every GMSA input projection and
  the whole first ELAB also float (a set picked by hand from the stress images).
Calibration data is T91 only, as for every INT8 engine; the stress images choose nothing.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

from elan_deploy.calibration.int8 import default_config, int8_onnx_for, ranges_for
from elan_deploy.calibration.recipes import QuantizeConfig, quantize
from elan_deploy.console import print_table
from elan_deploy.cpu import cpu_caps
from elan_deploy.export.metadata import read_props
from elan_deploy.metrics import psnr
from elan_deploy.model import load_bundled
from elan_deploy.runtimes import EngineLoader, ModelSource
from elan_deploy.stress import stress_set
from elan_deploy.upscale import Upscaler

VARIANTS = ("default", "budget-only", "matmuls-float", "minmax", "inputs-float")
SCALE = 4


def also_float(source: ModelSource, base: Path, out: Path, keep: Callable[[onnx.NodeProto], bool]) -> tuple[Path, int]:
    """`base`'s ranges and float set, with the nodes `keep` picks float too; (file, nodes added)."""
    fp32 = Path(source.onnx_path())
    float_nodes = [n for n in read_props(base).get("int8_float_nodes", "").split(",") if n]
    added = [n.name for n in onnx.load(str(fp32), load_external_data=False).graph.node if keep(n)]
    onnx.save(quantize(fp32, ranges_for(fp32, default_config(), source.scale), default_config(), sorted(set(float_nodes + added))), str(out))
    return out, len(added)


def in_inputs_float(node: onnx.NodeProto) -> bool:
    """Every GMSA input projection and every node of the first ELAB."""
    return "/project_inp/" in node.name or node.name.startswith("/body.0/")


def float_groups(path: Path) -> str:
    groups = read_props(path).get("int8_float_groups", "")
    return str(len(groups.split(","))) if groups else "0"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    wanted = [v.strip() for v in args.variants.split(",") if v.strip()]
    if unknown := set(wanted) - set(VARIANTS):
        parser.error(f"unknown variant(s) {', '.join(sorted(unknown))}; choose from {', '.join(VARIANTS)}")
    print(f"ISA: {cpu_caps().describe()}")
    loaded = load_bundled()
    source = ModelSource(loaded, guard=True)
    images = stress_set(SCALE)
    reference = Upscaler(EngineLoader(source, "torch", "fp32", threads=args.threads).open(), SCALE, tile=None)
    expected = [np.clip(reference(image.lr.astype(np.float32)), 0, 255) for image in images]
    default = int8_onnx_for(source)
    budget_only = int8_onnx_for(source, default_config(hard_edge_floor_db=None))
    rows = []
    with tempfile.TemporaryDirectory(prefix="int8-stress-") as tmp:
        for variant in wanted:
            if variant in ("default", "budget-only"):
                path = default if variant == "default" else budget_only
                kept = float_groups(path)
            elif variant == "matmuls-float":
                path, count = also_float(source, budget_only, Path(tmp) / "matmuls-float.onnx", lambda n: n.op_type == "MatMul")
                kept = f"{float_groups(budget_only)} + {count} MatMuls"
            elif variant == "inputs-float":
                path, count = also_float(source, budget_only, Path(tmp) / "inputs-float.onnx", in_inputs_float)
                kept = f"{float_groups(budget_only)} + {count} nodes"
            else:
                path = int8_onnx_for(source, QuantizeConfig(method="minmax", hard_edge_floor_db=None))
                kept = float_groups(path)
            engine = EngineLoader(ModelSource(loaded, guard=True, onnx=path), "onnxruntime", "fp32", threads=args.threads).open()
            upscale = Upscaler(engine, SCALE, tile=None)
            scores = [psnr(np.clip(upscale(image.lr.astype(np.float32)), 0, 255), ref) for image, ref in zip(images, expected)]
            rows.append([variant, kept, *(f"{s:.1f}" for s in scores), f"{min(scores):.2f}"])
    print_table(
        "INT8 (ONNX Runtime) against guarded FP32 on the raw stress inputs, PSNR dB",
        ["variant", "kept float", *(image.name for image in images), "worst"], rows,
    )


if __name__ == "__main__":
    main()
