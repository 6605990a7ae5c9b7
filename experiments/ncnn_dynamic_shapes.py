#!/usr/bin/env python
"""Can one ncnn file take any H x W? PNNX's dynamic-shape conversion of the rank4 deploy model, run in ncnn.

    python -m experiments.ncnn_dynamic_shapes [--shape 64x96] [--shape2 96x128] [--run 48x80 --run 64x96]

PNNX writes the traced window counts into every Reshape, so a plain conversion runs one H x W.
The toolkit's ncnn engines take any size through their own rewrite of two plain conversions
(`runtimes.ncnn.any_size`). This is the route it does not take: given a second input shape
(`inputshape2`), PNNX itself writes shape expressions (ncnn >= 20250428). This converts the guarded bundled model that way, lists the
layers ncnn has no implementation for (PNNX leaves them under their PyTorch names, e.g.
`Tensor.reshape`) and the Reshape expressions with more than four axes, then loads and runs the
file at each `--run` shape in a child process (a crash inside ncnn ends only the child) and
compares with the PyTorch deploy model.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = r"""
import json, sys
import numpy as np, ncnn
param, weights, shapes = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
net = ncnn.Net()
for option in ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic", "use_bf16_storage", "use_bf16_packed"):
    setattr(net.opt, option, False)
status = [net.load_param(param), net.load_model(weights)]
print(json.dumps({"load": status}), flush=True)
for h, w, path in shapes:
    x = np.ascontiguousarray(np.load(path))
    with net.create_extractor() as ex:
        ex.input("in0", ncnn.Mat(x))
        rc, out = ex.extract("out0")
    np.save(path + ".ncnn.npy", np.array(out))
    print(json.dumps({"shape": [h, w], "status": rc}), flush=True)
"""


def _shape(text: str) -> tuple[int, int]:
    h, w = (int(v) for v in text.lower().split("x"))
    return h, w


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=_shape, default=(64, 96))
    parser.add_argument("--shape2", type=_shape, default=(96, 128))
    parser.add_argument("--run", type=_shape, action="append")
    args = parser.parse_args()
    runs = args.run or [(48, 80), (64, 96)]

    import numpy as np
    import torch

    from elan_deploy.model import load_bundled
    from elan_deploy.runtimes import ModelSource
    from elan_deploy.metrics import psnr
    from elan_deploy.runtimes.ncnn_rt import pnnx_executable, verification_image

    module = ModelSource(load_bundled()).deploy_module(windows="rank4")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        example = torch.from_numpy(verification_image(*args.shape))
        with torch.no_grad():
            torch.jit.trace(module, example, check_trace=False).save(str(work / "m.pt"))
        files = {k: str(work / f"m.{k}") for k in ("ncnnparam", "ncnnbin", "pnnxparam", "pnnxbin", "pnnxpy", "pnnxonnx", "ncnnpy")}
        shape1, shape2 = (f"[1,3,{h},{w}]f32" for h, w in (args.shape, args.shape2))
        done = subprocess.run(
            [str(pnnx_executable()), str(work / "m.pt"), f"inputshape={shape1}", f"inputshape2={shape2}", "fp16=0",
             *(f"{k}={v}" for k, v in files.items())],
            capture_output=True, text=True, check=False,
        )
        print(f"pnnx exit {done.returncode}")
        layers = [line.split()[0] for line in Path(files["ncnnparam"]).read_text().splitlines()[2:]]
        foreign = sorted({name for name in layers if "." in name})
        expressions = re.findall(r'6="([^"]*)"', Path(files["ncnnparam"]).read_text())
        over_four = [e for e in expressions if len(re.split(r",(?![^(]*\))", e)) > 4]
        print(f"{len(layers)} layers; without an ncnn implementation: {foreign or 'none'}")
        print(f"{len(expressions)} Reshape expressions, {len(over_four)} with more than four axes (e.g. {over_four[:1]})")
        inputs = []
        for h, w in runs:
            path = str(work / f"x{h}x{w}.npy")
            np.save(path, verification_image(h, w)[0])
            inputs.append((h, w, path))
        child = subprocess.run(
            [sys.executable, "-c", _CHILD, files["ncnnparam"], files["ncnnbin"], json.dumps(inputs)],
            capture_output=True, text=True, check=False,
        )
        print(child.stdout.strip())
        if child.returncode != 0:
            print(f"ncnn child process ended with {child.returncode} (negative: killed by that signal)")
        for h, w, path in inputs:
            result = Path(path + ".ncnn.npy")
            if result.exists():
                with torch.no_grad():
                    expected = module(torch.from_numpy(np.load(path))[None])[0].numpy()
                got = np.load(result)
                fidelity = psnr(got, expected) if got.shape == expected.shape else float("nan")
                print(f"{h}x{w}: ncnn output {got.shape}, {fidelity:.1f} dB against PyTorch")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
