"""Optional packages behind `--ray` and video inputs: a missing one is a one-line error naming its extra."""

from __future__ import annotations

import importlib
from types import ModuleType

from elan_deploy.errors import ElanDeployError

# module -> (what needs it, pip extra that installs it)
_EXTRAS = {
    "ray": ("--ray needs Ray", "ray"),
    "ray.data": ("--ray needs Ray Data", "ray"),
    "av": ("video files need PyAV", "video"),
}


def require(module: str) -> ModuleType:
    """Import `module` ("ray", "ray.data" or "av") or raise a one-line error with its pip command."""
    what, extra = _EXTRAS[module]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ElanDeployError(f"{what}, which is not installed; pip install 'elan-deploy[{extra}]'") from None
