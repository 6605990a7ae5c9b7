"""Names of the export strategies and opset bounds (torch-free, so the CLI parser stays fast)."""

from __future__ import annotations

from elan_deploy.errors import ElanDeployError

SHIFT_STRATEGIES: tuple[str, ...] = ("depthwise", "slice", "dense")
ATTENTION_STRATEGIES: tuple[str, ...] = ("shared", "sdpa")
# How shifted windows are cut out and put back (`rewrites.window_gather` vs `rewrites.windows`):
# "gather" = roll + partition as one Gather of pixels (and one for merge + unroll) with indices
# computed from the input shape, which a runtime folds to constants for a static engine;
# "reshape" = the Slice/Concat rolls and Reshape/Transpose/Reshape partitions of the paper's code;
# "rank4" = the same rolls, with partitions that keep the batch axis and at most four axes after
# it (ncnn's tensors have no more), so the window Reshapes stay free of the batch, and each Reshape's
# H- or W-dependent sizes follow one axis of its input: the form PNNX converts for ncnn
# (`runtimes.ncnn_rt`, `runtimes.ncnn.any_size`).
WINDOW_STRATEGIES: tuple[str, ...] = ("gather", "reshape", "rank4")
# Gather is the default: measured 19 % faster on OpenVINO (f32 and bf16, 1x3x192x320) and, in its
# previous form, 11 % on ONNX Runtime (fp32, 1x3x180x320) (BENCHMARKS.md, "Window data movement").
DEFAULT_WINDOWS = "gather"

# The TorchScript exporter (the one that needs no onnxscript) stops at opset 20; 21..23 are
# reached with onnx's version converter, and 23 adds the fused `Attention` op (see
# `attention_op`). 17 is the default: every runtime we target reads it, and nothing in ELAN
# needs a newer op. Pick 23 with attention="sdpa" where the benchmark says it wins.
DEFAULT_OPSET = 17
MIN_OPSET, MAX_OPSET = 13, 23


def check_shift_strategy(strategy: str) -> str:
    if strategy not in SHIFT_STRATEGIES:
        raise ElanDeployError(f"unknown shift strategy '{strategy}'; choose one of {', '.join(SHIFT_STRATEGIES)}")
    return strategy


def check_window_strategy(strategy: str) -> str:
    if strategy not in WINDOW_STRATEGIES:
        raise ElanDeployError(f"unknown window strategy '{strategy}'; choose one of {', '.join(WINDOW_STRATEGIES)}")
    return strategy


def check_attention_strategy(strategy: str) -> str:
    if strategy not in ATTENTION_STRATEGIES:
        raise ElanDeployError(f"unknown attention strategy '{strategy}'; choose one of {', '.join(ATTENTION_STRATEGIES)}")
    return strategy


def check_opset(opset: int) -> int:
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ElanDeployError(f"opset {opset} is not supported; choose {MIN_OPSET}..{MAX_OPSET}")
    return opset
