"""ncnn (CPU; Vulkan where the wheel and the machine have it): the deploy module -> PNNX -> `.param` + `.bin`.

ncnn is the runtime of the consumer upscalers (Real-ESRGAN-ncnn-vulkan, waifu2x-ncnn-vulkan,
upscayl, chaiNNer) and runs on Android/ARM, x86 and any Vulkan GPU. PNNX converts a traced
PyTorch module; it does not read ONNX, so, like Core ML, ncnn converts `ModelSource.deploy_module`.

Choices, and why:
- Windows in the "rank4" form (`export.rewrites.windows`): ncnn's tensors have at most four
  axes, and it has no layer for the index Gathers of the "gather" form nor for the rank-5
  views of the "reshape" form (PNNX drops those Reshapes, and ncnn then refuses to load the
  file). Whatever `--windows` says, an ncnn engine is built from the rank4 form, and its build
  record says so.
- One file for every H x W (`runtimes.ncnn.any_size`): PNNX writes each Reshape with the
  window counts of the traced shape, so the network is converted at two small probe shapes
  and the Reshapes whose sizes differ become ncnn shape expressions of their inputs. Images
  then run at their own padded size, as on ONNX Runtime, and the shifted windows wrap at the
  image's edge, not at a canvas's. The engine's shape range only bounds what it accepts
  (a static range is one Upscaler tile); a batch runs one image at a time.
- fp32 turns every reduced-precision option of ncnn off (its defaults store fp16 or bf16
  where the CPU has them). fp16 writes the weights as fp16 and turns on ncnn's fp16 storage,
  packing and arithmetic, which ncnn applies per layer where the CPU supports them; the engine
  reports which of them the CPU has. The range guard keeps the attention logits inside fp16's
  range (on T91 they peak near 1.7 thousand).
- int8 is ncnn's own INT8 (`runtimes.ncnn`: the `ncnn2table` table and the `ncnn2int8`
  rewrite, in NumPy). Convolutions run INT8; attention MatMuls and Softmax stay fp32 (ncnn
  has no INT8 layer for them). Ranges: 127/absmax of each convolution's input over T91
  calibration crops, run on a small static-shape fp32 engine (the ranges do not depend on
  the shape). Layer groups that cost the most stay fp32 until the held-out T91 drop
  meets the budget of the other INT8 engines (`sensitivity`, 0.05 dB, mean + 1 s.e.); the
  engine folder keeps the table (`model.ncnn.table`) and the build record says which groups
  stayed float and what the held-out check measured.
- Every build runs the engine once against the PyTorch deploy module on a smooth synthetic
  image: a conversion that does not compute the network (a dropped layer gives a ~10 dB
  picture) or that gives NaN/Inf is refused, never cached.
- `ncnn.Mat(array)` wraps the NumPy buffer without a copy: the input array is kept in a local
  while the extractor runs.
"""

from __future__ import annotations

import math
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from elan_deploy.errors import ElanDeployError, RuntimeUnavailable, WorkFailed
from elan_deploy.fileio import write_json_atomic
from elan_deploy.metrics import psnr
from elan_deploy.runtimes.base import (
    DEFAULT_SHAPES,
    BuildOptions,
    EngineInfo,
    Precision,
    RuntimeDefaults,
    Shape,
    ShapeRange,
    check_input,
)
from elan_deploy.runtimes.ncnn import any_size, int8_format
from elan_deploy.runtimes.source import ModelSource

WINDOWS = "rank4"
PARAM = "model.ncnn.param"
BIN = "model.ncnn.bin"
TABLE = "model.ncnn.table"
BUILD_INFO = "ncnn-build.json"
# Part of the engine cache key (`version`): bump them when the any-size rewrite or the INT8 table
# and float-fallback search (`runtimes.ncnn`) change, so cached engines are rebuilt rather than reused.
ANY_SIZE_FORMAT = 1
INT8_RECIPE = 1
INPUT_BLOB, OUTPUT_BLOB = "in0", "out0"  # the names PNNX gives the first input and output
# Fidelity to the PyTorch deploy module below which a build is refused (PSNR on 0..255, dB):
# a converted network computes the same function to ~1e-4 in fp32; fp16 storage loses ~3 digits;
# INT8 is held to the floor of the other INT8 engines (35 dB from FP32 on natural images).
MIN_BUILD_FIDELITY_DB = {Precision.FP32: 60.0, Precision.FP16: 35.0, Precision.INT8: 35.0}
_PNNX_TIMEOUT_S = 1800
_REDUCED_OPTIONS = ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic", "use_bf16_storage", "use_bf16_packed")


def import_ncnn() -> Any:
    try:
        import ncnn
    except ImportError:
        raise RuntimeUnavailable("ncnn is not installed; pip install 'elan-deploy[ncnn]'") from None
    return ncnn


def pnnx_executable() -> Path:
    try:
        import pnnx
    except ImportError:
        raise RuntimeUnavailable("building ncnn engines needs PNNX; pip install 'elan-deploy[ncnn]'") from None
    return Path(pnnx.EXEC_PATH)


def verification_image(height: int, width: int) -> np.ndarray:
    """1,3,H,W in 0..255: smooth gradients and waves, inside the range natural images take."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = [
        127.5 + 100.0 * np.sin(xx / 7.0 + yy / 11.0),
        40.0 + 180.0 * xx / max(width - 1, 1),
        127.5 + 90.0 * np.cos(yy / 5.0) * np.sin(xx / 13.0),
    ]
    return np.stack(channels)[None].astype(np.float32)


def _pnnx_command(work: Path, shape: Shape, fp16_weights: bool) -> list[str]:
    side = {name: str(work / f"model.{name}") for name in ("pnnxparam", "pnnxbin", "pnnxpy", "pnnxonnx", "ncnnpy")}
    return [
        str(pnnx_executable()), str(work / "model.pt"), f"inputshape=[{','.join(map(str, shape))}]f32", "device=cpu",
        f"ncnnparam={work / PARAM}", f"ncnnbin={work / BIN}", *(f"{k}={v}" for k, v in side.items()),
        f"fp16={1 if fp16_weights else 0}",
    ]


def _probe_net(folder: Path) -> Any:
    """A probe conversion, fp32 on one thread, every blob kept: `any_size` reads the Reshape inputs' shapes."""
    return load_net(folder / PARAM, folder / BIN, Precision.FP32, 1, keep_blobs=True)


def convert(module: Any, fp16_weights: bool, out: Path) -> None:
    """Trace the rank4 deploy module at both probe shapes, run PNNX on each (side by side), and
    write the any-size PARAM and BIN into `out`."""
    import torch

    pnnx_executable()
    with tempfile.TemporaryDirectory(prefix=".pnnx-", dir=out) as tmp:
        probes = [Path(tmp) / f"{shape[2]}x{shape[3]}" for shape in any_size.PROBE_SHAPES]
        for work, shape in zip(probes, any_size.PROBE_SHAPES):
            work.mkdir()
            example = torch.from_numpy(verification_image(shape[2], shape[3]))
            with torch.no_grad(), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=r".*torch\.jit\.trace", category=DeprecationWarning)  # PNNX reads TorchScript
                torch.jit.trace(module, example, check_trace=False).save(str(work / "model.pt"))
        running = [
            subprocess.Popen(_pnnx_command(work, shape, fp16_weights), cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for work, shape in zip(probes, any_size.PROBE_SHAPES)
        ]
        try:
            for work, process in zip(probes, running):
                try:
                    log, _ = process.communicate(timeout=_PNNX_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    raise WorkFailed(f"PNNX did not finish converting the model for ncnn within {_PNNX_TIMEOUT_S} s") from None
                if process.returncode != 0 or not (work / PARAM).is_file() or not (work / BIN).is_file():
                    tail = " | ".join(log.strip().splitlines()[-3:])
                    raise WorkFailed(f"PNNX could not convert the model for ncnn (exit {process.returncode}): {tail}")
        finally:
            for process in running:  # the other conversion, when one failed: never left running
                if process.poll() is None:
                    process.kill()
                    process.wait()
        any_size.write_any_size(_probe_net, (probes[0], probes[1]), PARAM, BIN, INPUT_BLOB, out)


def load_net(param: Path, weights: Path, precision: Precision, threads: int | None, keep_blobs: bool = False) -> Any:
    """An ncnn `Net` on the CPU with the options `precision` asks for; `keep_blobs` keeps every
    intermediate blob of an extractor (ncnn's lightmode off) so each can be read after the run."""
    ncnn = import_ncnn()
    net = ncnn.Net()
    for option in _REDUCED_OPTIONS:
        setattr(net.opt, option, precision is Precision.FP16 and option.startswith("use_fp16"))
    net.opt.use_int8_inference = precision is Precision.INT8  # only layers with int8 weights run INT8
    net.opt.use_vulkan_compute = False
    net.opt.lightmode = not keep_blobs
    if threads:
        net.opt.num_threads = threads
    for path, load in ((param, net.load_param), (weights, net.load_model)):
        if load(str(path)) != 0:
            raise ElanDeployError(f"ncnn could not load {path}; rebuild the engine (delete its cache folder)")
    return net


class NcnnEngine:
    """An ncnn `Net` that runs any H x W inside `shapes`; a batch runs image by image through fresh extractors."""

    def __init__(self, folder: Path, precision: Precision, shapes: ShapeRange, options: BuildOptions) -> None:
        ncnn = import_ncnn()
        self.shapes = shapes
        self.net = load_net(folder / PARAM, folder / BIN, precision, options.threads)
        reduced = precision is Precision.FP16
        self.info = EngineInfo(
            runtime="ncnn",
            runtime_version=ncnn.__version__,
            precision=precision,
            precision_used=fp16_used(ncnn) if reduced else precision.value if precision is Precision.INT8 else "fp32",
            threads=self.net.opt.num_threads,
            details={"windows": WINDOWS, **(int8_details(folder) if precision is Precision.INT8 else {})},
        )
        self._ncnn = ncnn

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = check_input(x)
        if not self.shapes.contains((self.shapes.min[0], *x.shape[1:])):  # any batch: images run one at a time
            raise ElanDeployError(
                f"this ncnn engine takes inputs within {self.shapes}, got {x.shape[2]}x{x.shape[3]}; "
                f"build one with --shapes 1x3x{x.shape[2]}x{x.shape[3]} or upscale through the Upscaler, which tiles"
            )
        outputs = []
        for image in x:
            array = np.ascontiguousarray(image)  # ncnn.Mat wraps this buffer: keep it alive until extract returns
            with self.net.create_extractor() as extractor:
                extractor.input(INPUT_BLOB, self._ncnn.Mat(array))
                status, result = extractor.extract(OUTPUT_BLOB)
                if status != 0:
                    raise WorkFailed(f"ncnn failed to run the engine (status {status})")
                outputs.append(np.array(result, dtype=np.float32, copy=True))
        return np.stack(outputs)


def int8_details(folder: Path) -> dict[str, str]:
    """How many of the quantizable layers run INT8 (the others stay fp32)."""
    layers = int8_format.Graph.read(folder / PARAM).quantizable()
    return {"int8_layers": f"{sum(1 for layer in layers if layer.get(8, 0))}/{len(layers)}"}


def fp16_used(ncnn: Any) -> str:
    """What ncnn's fp16 options give on this CPU: fp16 arithmetic needs ARMv8.2 (asimdhp); x86
    stores fp16 (weights and activations where a layer supports it) and computes in fp32."""
    if ncnn.cpu_support_arm_asimdhp():
        return "fp16"
    return "fp16-storage+fp32-arithmetic"


def verification_shapes(shapes: ShapeRange) -> list[Shape]:
    """The engine's own shape, and one of another height and width inside its range when there is one:
    an any-size file that is right at one size only is refused too."""
    first: Shape = (1, *shapes.opt[1:])  # type: ignore[assignment]
    other: Shape = (1, 3, max(shapes.min[2], shapes.opt[2] // 32 * 16), shapes.max[3])  # about half as high, as wide as it goes
    return [first] if other == first else [first, other]


def verify(engine: NcnnEngine, module: Any, precision: Precision) -> float:
    """The engine's lowest PSNR against the PyTorch deploy module on the verification images at
    `verification_shapes`; a non-finite or unfaithful engine is refused (the cache then keeps nothing)."""
    import torch

    worst = math.inf
    for shape in verification_shapes(engine.shapes):
        image = verification_image(shape[2], shape[3])
        got = engine(image)
        with torch.no_grad():
            expected = module(torch.from_numpy(image)).numpy()
        at = f"{shape[2]}x{shape[3]}"
        if not np.isfinite(got).all():
            raise WorkFailed(f"the ncnn {precision.value} engine gave NaN or Inf on the verification image at {at}; it was not kept")
        fidelity = psnr(got, expected)
        if fidelity < MIN_BUILD_FIDELITY_DB[precision]:
            raise WorkFailed(
                f"the ncnn {precision.value} engine does not compute the network: {fidelity:.1f} dB against PyTorch on the "
                f"verification image at {at} (at least {MIN_BUILD_FIDELITY_DB[precision]:.0f} dB expected); it was not kept"
            )
        worst = min(worst, fidelity)
    return worst


class NcnnRuntime(RuntimeDefaults):
    name = "ncnn"
    extra = "ncnn"
    precisions = (Precision.FP32, Precision.FP16, Precision.INT8)
    default_shapes = DEFAULT_SHAPES  # any H x W: whole images, as ONNX Runtime runs them

    def check(self) -> None:
        import_ncnn()
        pnnx_executable()

    def version(self) -> str:
        import importlib.metadata

        return f"ncnn {import_ncnn().__version__}, pnnx {importlib.metadata.version('pnnx')}, any-size {ANY_SIZE_FORMAT}, int8 recipe {INT8_RECIPE}"

    def build(self, source: ModelSource, precision: Precision, shapes: ShapeRange, out: Path, options: BuildOptions) -> None:
        module = source.deploy_module(windows=WINDOWS)
        record: dict[str, Any] = {}
        if precision is Precision.INT8:
            # imported here: calibration pulls in the ONNX tooling, which fp32/fp16 builds never need
            from elan_deploy.runtimes.ncnn.int8_search import build_int8

            record = {"int8": build_int8(module, source.scale, out)}
        else:
            convert(module, fp16_weights=precision is Precision.FP16, out=out)
        engine = NcnnEngine(out, precision, shapes, options)
        fidelity = verify(engine, module, precision)
        write_json_atomic(out / BUILD_INFO, {
            "windows": WINDOWS, "shapes": str(shapes), "any_size": "Reshapes follow the input (ncnn shape expressions)",
            "verified_at": [f"{s[2]}x{s[3]}" for s in verification_shapes(shapes)], "precision": precision.value,
            "precision_used": engine.info.precision_used,
            "fidelity_db": None if math.isinf(fidelity) else round(fidelity, 2), "version": self.version(), **record,
        })

    def load(self, engine: Path, precision: Precision, shapes: ShapeRange, options: BuildOptions) -> NcnnEngine:
        return NcnnEngine(engine, precision, shapes, options)
