"""`runtime:precision` engine specs, as `elan-deploy diff` takes them on the command line."""

from __future__ import annotations

from dataclasses import dataclass

from elan_deploy.errors import ElanDeployError
from elan_deploy.runtimes.base import Precision


@dataclass(frozen=True)
class EngineSpec:
    """One engine to compare: a runtime and the precision it is built for."""

    runtime: str  # a name in RUNTIME_NAMES
    precision: Precision  # one the runtime builds (runtime_precisions)

    @property
    def label(self) -> str:
        return f"{self.runtime}:{self.precision.value}"

    def __str__(self) -> str:
        return self.label

    @classmethod
    def parse(cls, text: str) -> EngineSpec:
        """`onnxruntime:fp32`, `openvino:bf16`, ...; a wrong runtime or precision is bad usage."""
        from elan_deploy.runtimes import RUNTIME_NAMES, runtime_precisions

        runtime, sep, precision = text.strip().partition(":")
        if not sep or not runtime or not precision:
            raise ElanDeployError(f"bad engine '{text}'; write RUNTIME:PRECISION, e.g. onnxruntime:fp32 or openvino:bf16")
        if runtime not in RUNTIME_NAMES:
            raise ElanDeployError(f"bad engine '{text}': unknown runtime '{runtime}'; choose one of {', '.join(RUNTIME_NAMES)}")
        parsed = Precision.parse(precision)
        supported = runtime_precisions(runtime)
        if parsed not in supported:
            names = ", ".join(p.value for p in supported)
            raise ElanDeployError(f"bad engine '{text}': {runtime} does not run {parsed.value}; choose one of {names}")
        return cls(runtime, parsed)


def parse_engine_specs(texts: list[str]) -> list[EngineSpec]:
    """At least two distinct engines; the first is the reference."""
    specs = [EngineSpec.parse(t) for t in texts]
    if len(specs) < 2:
        raise ElanDeployError("diff needs at least two engines, e.g. `elan-deploy diff onnxruntime:fp32 openvino:bf16` (the first is the reference)")
    seen: set[EngineSpec] = set()
    for spec in specs:
        if spec in seen:
            raise ElanDeployError(f"engine '{spec}' is given twice; name each engine once")
        seen.add(spec)
    return specs
