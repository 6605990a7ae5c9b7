"""User-facing errors.

Every failure a user can cause (bad image, bad checkpoint, missing runtime) is raised as an
`ElanDeployError` whose message is one line naming the problem and the fix; the CLI prints
it without a traceback and exits non-zero.
"""

from __future__ import annotations


class ElanDeployError(Exception):
    """A problem the user can fix; the message says how."""


class ImageError(ElanDeployError):
    """An input file is not a readable image."""


class CheckpointError(ElanDeployError):
    """A checkpoint is unsafe, corrupt or of another architecture/scale."""


class DatasetError(ElanDeployError):
    """A dataset folder is missing or empty."""


class RuntimeUnavailable(ElanDeployError):
    """A runtime's package or hardware is missing; the message names the extra to install."""
