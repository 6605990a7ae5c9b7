#!/usr/bin/env python
"""Which parts of OpenVINO's INT8 engine pay: NNCF engines that differ only in their float set.

    python -m experiments.int8_parts [--iters 11] [--warmup 2] [--threads 2] [--shape 1x3x192x320] [--variants shipped,convs]
                                     [--config KEY=VALUE ...] [--nodes N]

Quantizes the default export with the shipped NNCF recipe (`nncf_int8_ir`: T91 calibration
patches, the Q/DQ search's float set) and with three larger float sets, then profiles the
float export (bf16) and the INT8 IRs (all four, or those `--variants` names) in one
interleaved `experiments.openvino_profile` run, with the fused quantize Subgraphs listed per kind:

- shipped:            every conv and attention MatMul in INT8 but the recipe's float set;
- convs:              attention MatMuls float too (INT8 on the convolutions only);
- project-out:        the GMSA output projections float too (the merge Gather moves bf16);
- project-out-map-v:  and the attention-map·v MatMuls float too.

The IRs are written to a temporary folder and removed at exit; the calibration caches are the
toolkit's own (`$ELAN_DEPLOY_CACHE`).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

# ONNX node names (regex) that each variant keeps float on top of the recipe's float set
PROJECT_OUT = r"^/body\.\d+/gmsas\.\d+/project_out/Conv$"
MAP_V = r"^/body\.\d+/gmsas\.0/MatMul_[135]$|^/body\.\d+/gmsas\.1/MatMul(_[12])?$"  # softmax map · v
VARIANTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {  # name: (extra float node patterns, extra float op types)
    "shipped": ((), ()),
    "convs": ((), ("MatMul",)),
    "project-out": ((PROJECT_OUT,), ()),
    "project-out-map-v": ((PROJECT_OUT, MAP_V), ()),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="1x3x192x320")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=11)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--config", action="append", default=[], help="extra OpenVINO properties per compile, as experiments.openvino_profile takes them")
    parser.add_argument("--nodes", type=int, default=0, metavar="N", help="also list the N costliest node kinds per model")
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}: choose from {', '.join(VARIANTS)}")

    import onnx

    from elan_deploy.calibration.nncf_int8 import FLOAT_TYPES, NNCFConfig, float_nodes_of, nncf_int8_ir
    from elan_deploy.model import load_bundled
    from elan_deploy.runtimes import ModelSource
    from elan_deploy.scratch import cache_root, temporary_dir
    from experiments import openvino_profile

    source = ModelSource(load_bundled(), work_dir=cache_root() / "onnx")
    fp32 = source.onnx_path()
    nodes = [n.name for n in onnx.load(str(fp32), load_external_data=False).graph.node]
    recipe = float_nodes_of(source)
    with temporary_dir("elan-int8-parts") as folder:
        irs = []
        for name in variants:
            patterns, types = VARIANTS[name]
            extra = [n for n in nodes if any(re.search(p, n) for p in patterns)]
            config = NNCFConfig(float_nodes=tuple(recipe + extra), ignore_types=FLOAT_TYPES + types)
            xml = Path(folder) / f"int8-{name}.xml"
            nncf_int8_ir(source, xml, config)
            print(f"{xml.name}: {len(recipe) + len(extra)} float nodes, float op types {', '.join(config.ignore_types)}", file=sys.stderr)
            irs.append(str(xml))
        extra = [f"--config={spec}" for spec in args.config] + ["--nodes", str(args.nodes)]
        return openvino_profile.main([str(fp32), *irs, "--precision", "bf16", "--shape", args.shape, "--threads", str(args.threads),
                                      "--iters", str(args.iters), "--warmup", str(args.warmup), "--subgraphs", *extra])


if __name__ == "__main__":
    sys.exit(main())
