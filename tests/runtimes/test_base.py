"""The Runtime protocol: every runtime implements all of it."""

from __future__ import annotations

import pytest

from elan_deploy.runtimes import RUNTIME_NAMES, Precision, ShapeRange


@pytest.mark.parametrize("name", RUNTIME_NAMES)
def test_every_runtime_implements_the_whole_protocol(name: str) -> None:
    """The Runtime protocol is the real interface: same members, same method signatures, no getattr probing."""
    import inspect

    from elan_deploy.runtimes import Runtime, get_runtime

    runtime = get_runtime(name)
    assert isinstance(runtime, Runtime)
    for method in ("check", "version", "build", "load", "open"):
        declared = inspect.signature(getattr(Runtime, method))
        implemented = inspect.signature(getattr(type(runtime), method))
        assert list(implemented.parameters) == list(declared.parameters), f"{name}.{method}"
    assert isinstance(runtime.needs_build, bool) and isinstance(runtime.default_shapes, ShapeRange)
    assert runtime.precisions and all(isinstance(p, Precision) for p in runtime.precisions)
