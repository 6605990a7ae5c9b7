"""What this CPU runs natively: its ISA flags, and the precision each runtime executes for a request.

The project runs on CPUs that differ in what they compute in hardware: AMX Xeons (bf16 tiles,
AVX512-FP16), Zen 4/5 (AVX-512 with BF16 and VNNI) and Zen 3 (AVX2 only). A precision the CPU
lacks is either emulated (torch bf16 on AVX2 is several times slower than fp32) or silently
replaced (OpenVINO runs f32 when bf16 or f16 is asked on AVX2, bf16 when f16 is asked on Zen 4/5).
Such cells cost the most and show nothing new, so the default bench plan asks this module which
cells run natively and what each one will actually execute.

It is also the one reader of /proc/cpuinfo and /proc/meminfo: the CPU's model name and id that
results record, and the memory available to a batch.

`ELAN_DEPLOY_CPU_FLAGS` (test/debug override): a comma- or space-separated list of flags to
assume instead of the CPU's, e.g. `ELAN_DEPLOY_CPU_FLAGS=avx2` plans as on an AVX2-only
machine. It changes what elan-deploy plans, not what the libraries execute.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

FLAGS_ENV = "ELAN_DEPLOY_CPU_FLAGS"
# The flags that decide precision support, in the order reports list them.
ISA_FLAGS = (
    "avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "amx_fp16", "avx_vnni",
)


@dataclass(frozen=True)
class CpuCaps:
    """The CPU's ISA flags (Linux /proc/cpuinfo names) and whether they come from the override."""

    flags: frozenset[str]
    overridden: bool = False

    @property
    def bf16(self) -> bool:
        """bf16 arithmetic in hardware: AVX512-BF16 dot products or AMX bf16 tiles."""
        return bool({"avx512_bf16", "amx_bf16"} & self.flags)

    @property
    def fp16(self) -> bool:
        """fp16 arithmetic in hardware (x86: AVX512-FP16 or AMX-FP16)."""
        return bool({"avx512_fp16", "amx_fp16"} & self.flags)

    @property
    def avx512(self) -> bool:
        return "avx512f" in self.flags

    @property
    def isa(self) -> list[str]:
        """The deciding flags present, for messages and reports."""
        return [f for f in ISA_FLAGS if f in self.flags]

    @property
    def summary(self) -> str:
        """A short name: 'AMX', 'AVX-512 BF16', 'AVX-512', 'AVX2' or 'no AVX2'."""
        if "amx_bf16" in self.flags:
            return "AMX"
        if self.avx512:
            return "AVX-512 BF16" if self.bf16 else "AVX-512"
        return "AVX2" if "avx2" in self.flags else "no AVX2"

    def describe(self) -> str:
        text = f"{self.summary} ({', '.join(self.isa) or 'none of ' + ', '.join(ISA_FLAGS[:4])})"
        return f"{text}, assumed from ${FLAGS_ENV}" if self.overridden else text


def _proc_cpuinfo() -> list[str]:
    """The lines of /proc/cpuinfo; none where it cannot be read (off Linux)."""
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def _proc_cpuinfo_flags() -> frozenset[str] | None:
    for line in _proc_cpuinfo():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return None


def cpu_model() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it, else what `platform` says."""
    for line in _proc_cpuinfo():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_id() -> str | None:
    """CPU family/model/stepping: VMs often name every generation just "AMD EPYC", and these tell them apart."""
    fields: dict[str, str] = {}
    for line in _proc_cpuinfo():
        key, _, value = line.partition(":")
        if key.strip() in ("cpu family", "model", "stepping"):
            fields.setdefault(key.strip(), value.strip())
        elif not line.strip() and fields:
            break
    if len(fields) < 3:
        return None
    return f"family {fields['cpu family']} model {fields['model']} stepping {fields['stepping']}"


def mem_available() -> int | None:
    """Bytes the OS reports available (MemAvailable in /proc/meminfo); None where it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _torch_capability_flags() -> frozenset[str]:
    """Off Linux: the vector ISA PyTorch dispatches to (it has no bf16/AMX detail)."""
    try:
        import torch

        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:  # torch missing or too old: assume nothing
        return frozenset()
    return frozenset({"AVX512": {"avx2", "avx512f"}, "AVX2": {"avx2"}}.get(capability, set()))


@lru_cache(maxsize=1)
def _detected_flags() -> frozenset[str]:
    flags = _proc_cpuinfo_flags()
    return flags if flags is not None else _torch_capability_flags()


def parse_flags(text: str) -> frozenset[str]:
    return frozenset(f.strip().lower() for f in text.replace(",", " ").split() if f.strip())


def cpu_caps_detected() -> CpuCaps:
    """This CPU's own flags, whatever the override says (for reports of the machine)."""
    return CpuCaps(_detected_flags())


def cpu_caps() -> CpuCaps:
    """This CPU's flags, or the ones `ELAN_DEPLOY_CPU_FLAGS` says to assume."""
    if override := os.environ.get(FLAGS_ENV, "").strip():
        return CpuCaps(parse_flags(override), overridden=True)
    return CpuCaps(_detected_flags())


@dataclass(frozen=True)
class PrecisionPlan:
    """What a runtime executes when `precision` is asked on this CPU.

    `runs` is the precision name the runtime will report as used (predicted from the flags; the
    engine's own report is what results record). `native` is False when the work is emulated
    or silently replaced; `reason` then says why, for the skipped row.
    """

    runs: str
    native: bool
    reason: str | None = None


def precision_plan(runtime: str, precision: str, caps: CpuCaps | None = None) -> PrecisionPlan:
    """The precision `runtime` executes for `precision` here, and whether the CPU runs it natively."""
    caps = caps or cpu_caps()
    if precision == "fp32" or runtime in ("tensorrt", "coreml") or platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        # GPU / Apple runtimes and non-x86 CPUs are not judged by x86 flags.
        return PrecisionPlan(precision, True)
    without = f"this CPU has {caps.describe()}"
    if runtime in ("torch", "torch-compile"):
        if precision == "bf16" and not caps.bf16:
            return PrecisionPlan("bf16", False, f"{runtime} emulates bf16 without avx512_bf16 or AMX ({without})")
        return PrecisionPlan(precision, True)
    if runtime == "openvino":
        return _openvino_plan(precision, caps, without)
    if runtime == "onnxruntime" and precision == "fp16":
        # ONNX Runtime runs the typed FP16 ONNX (the file TensorRT builds from) with its CPU kernels,
        # casting around ops that have no fp16 kernel: slower than fp32 but not an emulation that
        # costs minutes, and the only CPU-side check of that file. It stays in the plan.
        return PrecisionPlan("fp16", True)
    return PrecisionPlan(precision, True)


def _openvino_plan(precision: str, caps: CpuCaps, without: str) -> PrecisionPlan:
    """OpenVINO's CPU plugin: the `INFERENCE_PRECISION_HINT` rules of its config.

    bf16 is honoured on any AVX-512 CPU (emulated without AVX512-BF16), else f32. f16 is
    honoured with AVX512-FP16 / AMX-FP16; otherwise the plugin keeps its default, bf16 where
    AVX512-BF16 exists, else f32. INT8 engines run their float parts with the bf16 hint.
    """
    if precision == "int8":
        return PrecisionPlan("int8+bf16" if caps.avx512 else "int8+fp32", True)
    if precision == "bf16":
        if caps.bf16:
            return PrecisionPlan("bf16", True)
        if caps.avx512:
            return PrecisionPlan("bf16", False, f"OpenVINO emulates bf16 without avx512_bf16 or AMX ({without})")
        return PrecisionPlan("fp32", False, f"OpenVINO runs f32 when bf16 is asked without AVX-512 ({without})")
    if precision == "fp16":
        if caps.fp16:
            return PrecisionPlan("fp16", True)
        if caps.bf16:
            return PrecisionPlan("bf16", True)  # native, but the bf16 cell measures the same thing
        return PrecisionPlan("fp32", False, f"OpenVINO runs f32 when fp16 is asked without avx512_fp16, AMX or avx512_bf16 ({without})")
    return PrecisionPlan(precision, True)


def native_precisions(runtime: str, precisions: tuple[str, ...] = ("fp32", "bf16", "fp16", "int8"), caps: CpuCaps | None = None) -> list[str]:
    """The precisions of `precisions` that `runtime` runs natively on this CPU."""
    return [p for p in precisions if precision_plan(runtime, p, caps).native]


# What each runtime runs fastest here without calibration, from BENCHMARKS.md: reduced precision
# where the hardware has it, fp32 where the CPU kernels for fp16/int8 are slower (ONNX Runtime).
_FASTEST_REDUCED = {"torch": "bf16", "torch-compile": "bf16", "openvino": "bf16", "tensorrt": "fp16", "coreml": "fp16"}


def fastest_native_precision(runtime: str, caps: CpuCaps | None = None) -> str:
    """The precision `--precision auto` picks for `runtime` on this CPU.

    bf16 for PyTorch and OpenVINO where the CPU has bf16 arithmetic (0.002-0.005 dB on Set5),
    fp16 for the GPU/Apple runtimes, else fp32. INT8 is never picked: it needs a calibration of
    minutes and its quality budget is the user's call.
    """
    reduced = _FASTEST_REDUCED.get(runtime)
    if reduced is None:
        return "fp32"
    plan = precision_plan(runtime, reduced, caps)
    return reduced if plan.native and plan.runs == reduced else "fp32"
