"""Is a fused window-attention kernel worth integrating? Its time against OpenVINO's for the same work.

    python -m experiments.fused_attention [--shape 1x3x180x320] [--threads 2] [--rounds 5] [--iters 2] [--precision f32]

ELAN-light spends its attention in 12 blocks x 3 window-size groups (ws 4, 8, 16: 16, 64, 256
tokens per window, 20 channels each): the block's first GMSA computes softmax(q·qᵀ)·v per window,
the second reuses that map with its own v. The default export ("gather" windows, shared map)
runs this per group as a Gather in, Split, MatMul, Softmax, MatMul and a Gather out, with each
window's map written to memory and read back. The C++ kernel (`fused_attention_kernel.cpp`,
built once with `torch.utils.cpp_extension` into the cache root) reads q and v straight from the
channel-last projection, does the shift by index arithmetic, and keeps a 16-row block of the map
in L1: no gathered copy of the image, no map in memory.

Inputs are real: the bundled model runs on the first Set5 LR x4 image tiled to the shape (padded
to a multiple of 16 as the model pads it), and the projection outputs (after the folded
BatchNorm) of block 0 (unshifted) and block 1 (shifted) are hooked. For every window size and
shift the same attention work is built as a small torch module with the export's own gather
indices (`rewrites.window_gather.window_index`) and shared-map attention, exported to ONNX
(opset 17) and compiled by OpenVINO CPU (f32, PERF_COUNT); all of its executed nodes count.

Works (one group each): "first" = first GMSA's attention; "pair" = first + second GMSA. The
kernel does a pair three ways: "store f32"/"store f16" (the first GMSA stores each window's
normalised map, fp32 or IEEE half via F16C, the second reads it back) and "recompute" (the second
GMSA recomputes softmax(q·qᵀ) from the first GMSA's projection: one more q·qᵀ, no stored map).
OpenVINO runs every pair with its shared map, so the pair rows share the OpenVINO columns.

How to read the table: "OV node ms" is the sum of the executed nodes' times per inference
(median), the time the work costs inside a whole-model graph; "OV wall ms" adds the call
overhead of a small standalone model. "kernel / OV node" is the gate: the kernel passes where it
takes at most 40 % of OpenVINO's node time for the same work, on the model total (6 unshifted +
6 shifted blocks). MACs count q·qᵀ once per pair (nW·T²·c each product); GMAC/s divide them by
OV node time or kernel time (the recompute kernel executes one q·qᵀ more than it is credited).
Everything is timed in one interleaved run (`time_interleaved`), same thread count for both, so a
slow spell of a shared machine lands on every cell alike. Outputs are checked against OpenVINO
and an independent PyTorch reference (roll + `elan.window_partition`); max abs error over the
reference output's max abs; FP32 must stay under 1e-4, an fp16-stored map under 1e-3.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from elan_deploy.bench.latency import natural_input, time_interleaved
from elan_deploy.cpu import cpu_caps_detected, cpu_id, cpu_model
from elan_deploy.export.rewrites.window_gather import WindowIndex, window_index
from elan_deploy.model.elan import window_merge, window_partition
from elan_deploy.runtimes.openvino_graph import layer_counts, node_times
from elan_deploy.scratch import cache_root, temporary_dir

ROOT = Path(__file__).resolve().parents[1]
KERNEL_SOURCE = Path(__file__).with_name("fused_attention_kernel.cpp")
KERNEL_NAME = "elan_fused_attention"
SET5_LR_X4 = ROOT.parent / "shared" / "data" / "Set5" / "LR_bicubic" / "X4"
WINDOW_MULTIPLE = 16
OPSET = 17
GATE = 0.40
TOLERANCE = {"f32": 1e-4, "f16 map": 1e-3, "bf16": 5e-2}  # max abs error / max abs of the reference
# kernel works: (name, the OpenVINO work it is timed against)
KERNEL_WORKS = (("first", "first"), ("pair store f32", "pair"), ("pair store f16", "pair"), ("pair recompute", "pair"))


# ------------------------------------------------------------------------------------------------
# The kernel (or the PyTorch reference when it cannot be built)


def build_kernel() -> tuple[Any, str]:
    """The compiled extension and a line about its build, or (None, why not) on any failure.

    The build folder lives in the cache root, so a second run only checks that the source is
    unchanged. Flags stay generic (-O3, no -march): each vector path carries its own target
    attribute and is chosen at run time, so the cached library runs on any x86-64 CPU.
    """
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return None, f"no C++ compiler found ('{compiler}'): measuring the PyTorch reference instead of the kernel"
    folder = cache_root() / "kernels" / "fused_attention"
    folder.mkdir(parents=True, exist_ok=True)
    library = folder / f"{KERNEL_NAME}.so"
    before = library.stat().st_mtime if library.exists() else None
    start = time.perf_counter()
    try:
        from torch.utils.cpp_extension import load

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ext = load(KERNEL_NAME, [str(KERNEL_SOURCE)], build_directory=str(folder),
                       extra_cflags=["-O3", "-fopenmp"], extra_ldflags=["-fopenmp"], verbose=False)
    except (ImportError, OSError, RuntimeError, subprocess.SubprocessError) as exc:  # no toolchain, or a compile error
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        return None, f"kernel build failed ({type(exc).__name__}: {reason[:200]}): measuring the PyTorch reference instead"
    seconds = time.perf_counter() - start
    rebuilt = before is None or library.stat().st_mtime != before
    return ext, f"kernel {'built' if rebuilt else 'loaded from cache'} in {seconds:.1f} s ({folder})"


def reference_attention(q_proj: torch.Tensor, q_offset: int, v_proj: torch.Tensor, v_offset: int, channels: int,
                        ws: int, shifted: bool, maps: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(1,H,W,c) output and (windows,T,T) maps the reference way: torch.roll + `elan.window_partition`.

    Independent of the gather indices the export and the kernel use, so it checks both.
    """
    h, w = q_proj.shape[1:3]
    q = q_proj[..., q_offset:q_offset + channels].permute(0, 3, 1, 2)
    v = v_proj[..., v_offset:v_offset + channels].permute(0, 3, 1, 2)
    if shifted:
        q, v = (torch.roll(t, shifts=(-ws // 2, -ws // 2), dims=(2, 3)) for t in (q, v))
    if maps is None:
        qw = window_partition(q, ws)
        maps = (qw @ qw.transpose(-2, -1)).softmax(dim=-1)
    y = window_merge(maps.float() @ window_partition(v, ws), ws, 1, h, w)
    if shifted:
        y = torch.roll(y, shifts=(ws // 2, ws // 2), dims=(2, 3))
    return y.permute(0, 2, 3, 1), maps


MAP_BLOCK = 16  # map rows per block in the kernel's stored-map layout


def map_shape(windows: int, tokens: int) -> tuple[int, int, int, int]:
    """The kernel's stored maps: (windows, T/16, T, 16), maps[w, b, j, l] = map[w, 16·b + l, j].

    Blocks of 16 map rows stored column by column, the order in which the kernel computes them;
    only the kernel reads them back, so they need not be row-major.
    """
    return windows, tokens // MAP_BLOCK, tokens, MAP_BLOCK


def to_blocked(maps: torch.Tensor) -> torch.Tensor:
    """(windows, T, T) row-major maps -> the kernel's layout (a view)."""
    windows, tokens, _ = maps.shape
    return maps.reshape(windows, tokens // MAP_BLOCK, MAP_BLOCK, tokens).transpose(2, 3)


def from_blocked(maps: torch.Tensor) -> torch.Tensor:
    """The kernel's layout -> (windows, T, T) row-major maps."""
    windows, _, tokens, _ = maps.shape
    return maps.transpose(2, 3).reshape(windows, tokens, tokens)


class TorchKernel:
    """The kernel's three calls done by `reference_attention`: what is timed when no kernel builds."""

    @staticmethod
    def first_gmsa(proj: torch.Tensor, offset: int, channels: int, ws: int, shifted: bool, out: torch.Tensor, out_offset: int,
                   maps: torch.Tensor | None = None, precision: str = "f32", path: str = "auto") -> None:
        y, atn = reference_attention(proj, offset, proj, offset + channels, channels, ws, shifted)
        out[..., out_offset:out_offset + channels] = y
        if maps is not None:
            maps.copy_(to_blocked(atn))

    @staticmethod
    def second_gmsa_store(proj: torch.Tensor, offset: int, channels: int, ws: int, shifted: bool, maps: torch.Tensor,
                          out: torch.Tensor, out_offset: int, precision: str = "f32", path: str = "auto") -> None:
        y, _ = reference_attention(proj, offset, proj, offset, channels, ws, shifted, from_blocked(maps))
        out[..., out_offset:out_offset + channels] = y

    @staticmethod
    def second_gmsa_recompute(q_proj: torch.Tensor, q_offset: int, proj: torch.Tensor, offset: int, channels: int, ws: int,
                              shifted: bool, out: torch.Tensor, out_offset: int, precision: str = "f32", path: str = "auto") -> None:
        out[..., out_offset:out_offset + channels] = reference_attention(q_proj, q_offset, proj, offset, channels, ws, shifted)[0]

    @staticmethod
    def cpu_paths() -> list[str]:
        return ["torch"]


# ------------------------------------------------------------------------------------------------
# Inputs: projection outputs of the bundled model on a natural image


@dataclass
class Projections:
    """Channel-last (1,H,W,C) outputs of one block's two project_inp (conv + BatchNorm)."""

    first: torch.Tensor   # 2·60 channels: per group, q (20) then v (20)
    second: torch.Tensor  # 60 channels: per group, v (20)


def capture_projections(shape: tuple[int, int, int, int]) -> tuple[dict[bool, Projections], str, Any]:
    """Run the bundled model once and hook block 0 (unshifted) and block 1 (shifted).

    Returns the projections per `shifted`, where the input came from, and the model config.
    """
    from elan_deploy.imaging import read_image
    from elan_deploy.model import load_bundled

    loaded = load_bundled()
    model = loaded.model.eval()
    images = sorted(SET5_LR_X4.glob("*.png")) if SET5_LR_X4.is_dir() else []
    if images:
        x = natural_input(shape, read_image(images[0]))
        source = f"{images[0].name} tiled to {shape[2]}x{shape[3]}"
    else:
        from elan_deploy.export.verify import probe_image

        x = probe_image(*shape[:1], shape[2], shape[3])
        source = "synthetic probe image (Set5 not found)"
    captured: dict[tuple[int, int], torch.Tensor] = {}
    hooks = []
    for block in (0, 1):
        for gmsa in (0, 1):
            module = model.body[block].modules_gmsa[f"gmsa_{gmsa}"].project_inp

            def hook(_module: nn.Module, _inputs: object, output: torch.Tensor, key: tuple[int, int] = (block, gmsa)) -> None:
                captured[key] = output.detach().permute(0, 2, 3, 1).contiguous()

            hooks.append(module.register_forward_hook(hook))
    with torch.no_grad():
        model(torch.from_numpy(x[:1]))
    for handle in hooks:
        handle.remove()
    shifts = {block: model.body[block].modules_gmsa["gmsa_0"].shifts > 0 for block in (0, 1)}
    if shifts != {0: False, 1: True}:
        raise RuntimeError(f"expected block 0 unshifted and block 1 shifted, got {shifts}")
    return {shifts[b]: Projections(captured[(b, 0)], captured[(b, 1)]) for b in (0, 1)}, source, loaded.config


# ------------------------------------------------------------------------------------------------
# The OpenVINO side: the export's gather windows and shared-map attention for one group


class GroupAttention(nn.Module):
    """One window-size group of a block's attention as the default export computes it.

    The projected pixels are read as rows of one group (pixel · groups + group) through the
    gather export's forward index, q and v are the two halves of each window, the map is
    softmax(q·qᵀ), and the output goes back to pixels through the inverse index, exactly as
    `GatherGMSA` does (there all groups share one Gather out; per group it is one Gather each).
    With `pair` the second GMSA's v windows are gathered from its projection and multiplied with
    the same map.
    """

    def __init__(self, index: WindowIndex, group: int, groups: int, channels: int, pair: bool) -> None:
        super().__init__()
        self.register_buffer("rows", index.forward * groups + group)
        self.register_buffer("inverse", index.inverse.reshape(-1))
        self.groups, self.channels, self.pair = groups, channels, pair

    def _merge(self, y: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return y.reshape(1, height * width, self.channels)[:, self.inverse].reshape(1, height, width, self.channels)

    def forward(self, first: torch.Tensor, second: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        _, height, width, _ = first.shape
        windows = first.reshape(1, height * width * self.groups, 2 * self.channels)[:, self.rows]
        q, v = windows.chunk(2, dim=-1)
        atn = (q @ q.transpose(-2, -1)).softmax(dim=-1)
        out = self._merge(atn @ v, height, width)
        if not self.pair:
            return out
        assert second is not None
        v2 = second.reshape(1, height * width * self.groups, self.channels)[:, self.rows]
        return out, self._merge(atn @ v2, height, width)


@dataclass
class OvCell:
    """One compiled OpenVINO model, its request (inputs bound once) and what its runs left."""

    request: Any
    compiled: Any
    executed: Counter
    node_us: list[float] = field(default_factory=list)
    per_type_us: dict[str, list[float]] = field(default_factory=dict)

    def sample(self) -> None:
        times = node_times(self.compiled)
        self.node_us.append(times.total_us)
        for layer, us in times.per_type_us.items():
            self.per_type_us.setdefault(layer, []).append(us)

    def outputs(self) -> list[torch.Tensor]:
        return [torch.from_numpy(self.request.get_output_tensor(i).data.copy()) for i in range(len(self.compiled.outputs))]


def compile_group(core: Any, module: GroupAttention, inputs: tuple[torch.Tensor, ...], folder: Path, name: str,
                  precision: str, threads: int) -> OvCell:
    """Export `module` (opset 17, static shapes), compile it for OpenVINO CPU, bind `inputs`."""
    import openvino as ov

    path = folder / f"{name}.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # legacy-exporter and TracerWarnings are expected
        torch.onnx.export(module, inputs, str(path), dynamo=False, opset_version=OPSET, do_constant_folding=True,
                          input_names=[f"proj{i}" for i in range(len(inputs))])
    model = core.read_model(str(path))
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads,
                                                 "PERFORMANCE_HINT": "LATENCY", "PERF_COUNT": True})
    request = compiled.create_infer_request()
    for i, tensor in enumerate(inputs):
        request.set_input_tensor(i, ov.Tensor(tensor.numpy(), shared_memory=True))
    request.infer()  # one run marks the nodes that do not execute
    return OvCell(request, compiled, layer_counts(compiled, executed_only=True))


# ------------------------------------------------------------------------------------------------
# Measurement


@dataclass
class Group:
    """One window size at one shift: inputs, outputs, maps and the calls to time."""

    ws: int
    index: int  # the group's position among the window sizes
    shifted: bool
    proj: Projections
    channels: int
    ov: dict[str, OvCell] = field(default_factory=dict)
    kernel_out: dict[str, torch.Tensor] = field(default_factory=dict)  # work -> (1,H,W,2·60): first, second GMSA

    @property
    def tokens(self) -> int:
        return self.ws * self.ws

    def macs(self, work: str) -> int:
        """q·qᵀ and map·v each cost nW·T²·c = H·W·T·c; a pair credits q·qᵀ once."""
        _, h, w, _ = self.proj.first.shape
        one = h * w * self.tokens * self.channels
        return (2 if work == "first" else 3) * one


def kernel_calls(kernel: Any, g: Group, precision: str) -> dict[str, Callable[[], None]]:
    """The four kernel works of one group, writing into preallocated outputs and maps."""
    first, second, c, ws, sh = g.proj.first, g.proj.second, g.channels, g.ws, g.shifted
    _, h, w, _ = first.shape
    groups_out = second.shape[3]
    windows = (h // ws) * (w // ws)
    maps32 = torch.empty(map_shape(windows, g.tokens))
    maps16 = torch.empty(map_shape(windows, g.tokens), dtype=torch.float16)
    q_off, v_off, o_off = 2 * c * g.index, c * g.index, c * g.index
    calls: dict[str, Callable[[], None]] = {}
    for work, _ in KERNEL_WORKS:
        out1, out2 = torch.zeros(1, h, w, groups_out), torch.zeros(1, h, w, groups_out)
        g.kernel_out[work] = (out1, out2)
        if work == "first":
            calls[work] = partial(kernel.first_gmsa, first, q_off, c, ws, sh, out1, o_off, None, precision)
        elif work.startswith("pair store"):
            maps = maps32 if work.endswith("f32") else maps16

            def store(out1: torch.Tensor = out1, out2: torch.Tensor = out2, maps: torch.Tensor = maps) -> None:
                kernel.first_gmsa(first, q_off, c, ws, sh, out1, o_off, maps, precision)
                kernel.second_gmsa_store(second, v_off, c, ws, sh, maps, out2, o_off, precision)

            calls[work] = store
        else:

            def recompute(out1: torch.Tensor = out1, out2: torch.Tensor = out2) -> None:
                kernel.first_gmsa(first, q_off, c, ws, sh, out1, o_off, None, precision)
                kernel.second_gmsa_recompute(first, q_off, second, v_off, c, ws, sh, out2, o_off, precision)

            calls[work] = recompute
    return calls


def rel_error(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def check_outputs(kernel: Any, groups: list[Group], precision: str) -> tuple[list[list[str]], list[str]]:
    """Kernel vs PyTorch reference and vs OpenVINO, OpenVINO vs reference: rows and failures."""
    rows, failures = [], []
    for g in groups:
        c, off = g.channels, g.channels * g.index
        ref1, _ = reference_attention(g.proj.first, 2 * c * g.index, g.proj.first, 2 * c * g.index + c, c, g.ws, g.shifted)
        ref2, _ = reference_attention(g.proj.first, 2 * c * g.index, g.proj.second, off, c, g.ws, g.shifted)
        ov_first = g.ov["first"].outputs()[0]
        ov_pair = g.ov["pair"].outputs()
        for work, _ in KERNEL_WORKS:
            out1, out2 = (t[..., off:off + c] for t in g.kernel_out[work])
            errors = [rel_error(out1, ref1), rel_error(out1, ov_first)]
            ov_err = rel_error(ov_first, ref1)
            if work != "first":
                errors += [rel_error(out2, ref2), rel_error(out2, ov_pair[1])]
                ov_err = max(ov_err, rel_error(ov_pair[0], ref1), rel_error(ov_pair[1], ref2))
            tolerance = TOLERANCE["bf16" if precision == "bf16" else "f16 map" if work.endswith("f16") else "f32"]
            worst = max(errors)
            if not np.isfinite(worst) or worst > tolerance:
                failures.append(f"ws {g.ws} {'shifted' if g.shifted else 'unshifted'} {work}: error {worst:.2e} > {tolerance:.0e}")
            cells = [f"{e:.1e}" for e in errors] + ["–", "–"] * (work == "first")
            rows.append([str(g.ws), "yes" if g.shifted else "no", work, *cells, f"{ov_err:.1e}", f"{tolerance:.0e}"])
    return rows, failures


def check_scalar_path(kernel: Any, groups: list[Group]) -> str:
    """The plain C++ path (CPUs without AVX2) against the reference, on a 64x64 crop of each shift (or the whole map)."""
    if "scalar" not in kernel.cpu_paths():
        return "plain C++ path: not built"
    worst = 0.0
    for g in groups:
        crop = Projections(g.proj.first[:, :64, :64].contiguous(), g.proj.second[:, :64, :64].contiguous())
        c, off = g.channels, g.channels * g.index
        out = torch.zeros(1, crop.first.shape[1], crop.first.shape[2], crop.second.shape[3])  # smaller features: the whole map
        kernel.first_gmsa(crop.first, 2 * c * g.index, c, g.ws, g.shifted, out, off, None, "f32", "scalar")
        ref, _ = reference_attention(crop.first, 2 * c * g.index, crop.first, 2 * c * g.index + c, c, g.ws, g.shifted)
        worst = max(worst, rel_error(out[..., off:off + c], ref))
    verdict = "ok" if worst <= TOLERANCE["f32"] else "FAILED"
    return f"plain C++ path (64x64 crops, first GMSA, all groups and shifts): max error {worst:.1e} ({verdict})"


# ------------------------------------------------------------------------------------------------
# Report


def _ms(values: list[float]) -> float:
    return statistics.median(values) * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="1x3x180x320", help="model input NxCxHxW; features are H, W padded to 16")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--iters", type=int, default=2, help="back-to-back runs per cell per round")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--settle", type=float, default=0.01, help="seconds of sleep before each cell's runs (idle thread pools)")
    parser.add_argument("--precision", default="f32", choices=("f32", "bf16"), help="kernel and OpenVINO precision")
    parser.add_argument("--out", type=Path, default=Path("fused-attention-out"), help="folder for fused_attention.json")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.rounds < 1 or args.iters < 1 or args.warmup < 0:
        parser.error("--threads, --rounds and --iters take 1 or more, --warmup 0 or more")

    import openvino as ov

    from elan_deploy.export import parse_shape

    dims = parse_shape(args.shape)
    if len(dims) != 4 or dims[1] != 3:
        parser.error(f"--shape takes Nx3xHxW, got {args.shape}")
    shape = (1, 3, dims[2], dims[3])
    torch.set_num_threads(args.threads)
    caps = cpu_caps_detected()

    kernel, build_line = build_kernel()
    measured = "kernel"
    if kernel is None:
        kernel, measured = TorchKernel(), "torch"
    paths = list(kernel.cpu_paths())
    if measured != "kernel":
        bf16_line = "BF16 (AVX-512 BF16) path: not built, not measured"
    elif "bf16" in paths:
        bf16_line = "BF16 (AVX-512 BF16) path: compiled; this CPU runs it (--precision bf16)"
    else:
        bf16_line = "BF16 (AVX-512 BF16) path: compiled; not measured on this CPU (no avx512bf16): the table has no BF16 numbers"
    if args.precision == "bf16" and "bf16" not in paths:
        print(build_line)
        print(f"{bf16_line}. Nothing to measure for --precision bf16 here.")
        return 0
    active = kernel.resolve_path("auto", args.precision) if measured == "kernel" else "torch"

    projections, source, config = capture_projections(shape)
    channels = config.channels // len(config.window_sizes)
    groups = [Group(ws, i, shifted, projections[shifted], channels)
              for i, ws in enumerate(config.window_sizes) for shifted in (False, True)]
    _, height, width, _ = projections[False].first.shape

    core = ov.Core()
    calls: dict[tuple[int, bool, str, str], Callable[[], object]] = {}
    with temporary_dir("elan-fused-attention") as folder:
        for g in groups:
            index = window_index(height, width, g.ws, g.ws // 2 if g.shifted else 0)
            for work, pair in (("first", False), ("pair", True)):
                module = GroupAttention(index, g.index, len(config.window_sizes), channels, pair).eval()
                inputs = (g.proj.first, g.proj.second) if pair else (g.proj.first,)
                g.ov[work] = compile_group(core, module, inputs, folder, f"ws{g.ws}-{int(g.shifted)}-{work}",
                                           args.precision, args.threads)
                calls[(g.ws, g.shifted, "ov", work)] = partial(g.ov[work].request.infer, share_outputs=True)
            for work, call in kernel_calls(kernel, g, args.precision).items():
                calls[(g.ws, g.shifted, measured, work)] = call

    def after_run(key: tuple[int, bool, str, str]) -> None:
        ws, shifted, who, work = key
        if who == "ov":
            next(g for g in groups if g.ws == ws and g.shifted == shifted).ov[work].sample()

    times = time_interleaved(calls, args.rounds, runs_per_round=args.iters, warmup=args.warmup,
                             settle_s=args.settle, after_run=after_run)
    check_rows, failures = check_outputs(kernel, groups, args.precision)
    scalar_line = check_scalar_path(kernel, groups) if measured == "kernel" else None

    load = os.getloadavg()
    print(f"# Fused window attention vs OpenVINO — {height}x{width} features (input {shape[2]}x{shape[3]}), "
          f"{args.threads} threads, precision {args.precision}")
    print(f"cpu: {cpu_model()} ({cpu_id() or 'id unknown'}), ISA {caps.describe()}, "
          f"fma {'yes' if 'fma' in caps.flags else 'no'}, f16c {'yes' if 'f16c' in caps.flags else 'no'}; "
          f"{platform.machine()}, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print(f"torch {torch.__version__}, OpenVINO {ov.get_version()}; {build_line}; kernel paths on this CPU: "
          f"{', '.join(paths)}; timed path: {active}")
    print(bf16_line)
    print(f"inputs: project_inp outputs of blocks 0 (unshifted) and 1 (shifted) of the bundled model on {source}; "
          f"{args.rounds} interleaved rounds x {args.iters} runs after {args.warmup} warm-up round(s), medians\n")

    rows: list[dict[str, Any]] = []
    for g in groups:
        for work, ov_work in KERNEL_WORKS:
            cell = g.ov[ov_work]
            ov_node = statistics.median(cell.node_us) / 1e3
            ov_wall = _ms(times[(g.ws, g.shifted, "ov", ov_work)])
            k_ms = _ms(times[(g.ws, g.shifted, measured, work)])
            rows.append({"ws": g.ws, "tokens": g.tokens, "shifted": g.shifted, "work": work, "macs": g.macs(ov_work),
                         "ov_node_ms": ov_node, "ov_wall_ms": ov_wall, "kernel_ms": k_ms})
    label = "kernel" if measured == "kernel" else "torch ref"
    print(f"| ws / tokens | shifted | work | MACs (M) | OV node ms | OV wall ms | {label} ms | {label} / OV node | "
          f"OV GMAC/s | {label} GMAC/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['ws']} / {r['tokens']} | {'yes' if r['shifted'] else 'no'} | {r['work']} | {r['macs'] / 1e6:.0f} | "
              f"{r['ov_node_ms']:.2f} | {r['ov_wall_ms']:.2f} | {r['kernel_ms']:.2f} | {r['kernel_ms'] / r['ov_node_ms']:.2f} | "
              f"{r['macs'] / r['ov_node_ms'] / 1e6:.1f} | {r['macs'] / r['kernel_ms'] / 1e6:.1f} |")
    totals: dict[str, dict[str, float]] = {}
    blocks_each = config.num_elabs // 2  # ELABs alternate unshifted, shifted
    for work, _ in KERNEL_WORKS:
        for scope, weight in (("block, unshifted", {False: 1, True: 0}), ("block, shifted", {False: 0, True: 1}),
                              (f"model ({2 * blocks_each} blocks)", {False: blocks_each, True: blocks_each})):
            picked = [r for r in rows if r["work"] == work and weight[r["shifted"]]]
            total = {k: sum(weight[r["shifted"]] * r[k] for r in picked) for k in ("macs", "ov_node_ms", "ov_wall_ms", "kernel_ms")}
            totals[f"{work} / {scope}"] = total
            print(f"| **all ws** | {scope} | **{work}** | {total['macs'] / 1e6:.0f} | {total['ov_node_ms']:.2f} | "
                  f"{total['ov_wall_ms']:.2f} | {total['kernel_ms']:.2f} | **{total['kernel_ms'] / total['ov_node_ms']:.2f}** | "
                  f"{total['macs'] / total['ov_node_ms'] / 1e6:.1f} | {total['macs'] / total['kernel_ms'] / 1e6:.1f} |")

    print("\nOpenVINO executed nodes per inference (type ×count ms, median), unshifted | shifted:")
    for ws in config.window_sizes:
        for work in ("first", "pair"):
            parts = []
            for shifted in (False, True):
                cell = next(g for g in groups if g.ws == ws and g.shifted == shifted).ov[work]
                parts.append(", ".join(f"{t} ×{n} {statistics.median(cell.per_type_us.get(t, [0.0])) / 1e3:.2f}"
                                       for t, n in sorted(cell.executed.items())))
            print(f"- ws {ws} {work}: {parts[0]} | {parts[1]}")

    print(f"\n| ws | shifted | work | {label} vs torch ref (1st) | vs OV (1st) | vs torch ref (2nd) | vs OV (2nd) | "
          "OV vs torch ref | tolerance |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in check_rows:
        print("| " + " | ".join(row) + " |")
    if scalar_line:
        print(scalar_line)

    print()
    model_scope = f"model ({2 * blocks_each} blocks)"
    first_ratio = totals[f"first / {model_scope}"]["kernel_ms"] / totals[f"first / {model_scope}"]["ov_node_ms"]
    pair_ratios = {work: totals[f"{work} / {model_scope}"]["kernel_ms"] / totals[f"{work} / {model_scope}"]["ov_node_ms"]
                   for work, ov_work in KERNEL_WORKS if ov_work == "pair"}
    best = min(pair_ratios, key=pair_ratios.__getitem__)
    passed = pair_ratios[best] <= GATE and measured == "kernel"
    print(f"gate (kernel ≤ {GATE:.0%} of OpenVINO node time, model total): first GMSA {first_ratio:.0%}; "
          + ", ".join(f"{w} {r:.0%}" for w, r in pair_ratios.items())
          + f" -> best pair form '{best}' {pair_ratios[best]:.0%}: **{'PASS' if passed else 'FAIL'}**"
          + ("" if measured == "kernel" else " (no kernel was built: the PyTorch reference was timed)"))

    args.out.mkdir(parents=True, exist_ok=True)
    document = {
        "shape": list(shape), "features": [height, width], "threads": args.threads, "precision": args.precision,
        "rounds": args.rounds, "iters": args.iters, "cpu": cpu_model(), "cpu_id": cpu_id(), "isa": caps.isa,
        "openvino": ov.get_version(), "torch": torch.__version__, "build": build_line, "paths": paths, "timed_path": active,
        "loadavg": list(load), "source": source, "rows": rows, "totals": totals, "errors": check_rows,
        "gate": GATE, "best_pair": best, "passed": passed,
    }
    (args.out / "fused_attention.json").write_text(json.dumps(document, indent=1))
    if failures:
        print("CORRECTNESS FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
