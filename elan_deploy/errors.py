"""User-facing errors.

Every failure a user can cause (bad image, bad checkpoint, missing runtime) is raised as an
`ElanDeployError` whose message is one line naming the problem and the fix; the CLI prints
it without a traceback and exits non-zero.
"""

from __future__ import annotations


class ElanDeployError(Exception):
    """A problem the user can fix; the message says how. The CLI exits with `exit_code`.

    Bad usage (a wrong flag, a missing or unreadable input, an unsafe output path) is 2; work
    that was attempted and failed (an engine produced NaN, the disk filled up, some files of a
    batch failed) is `WorkFailed`, exit 1.
    """

    exit_code = 2


class WorkFailed(ElanDeployError):
    """Valid usage, but the work failed (non-finite output, disk full, failed files); exit 1."""

    exit_code = 1


class ImageError(ElanDeployError):
    """An input file is not a readable image."""


class CheckpointError(ElanDeployError):
    """A checkpoint is unsafe, corrupt or of another architecture/scale."""


class DatasetError(ElanDeployError):
    """A dataset folder is missing or empty."""


class RuntimeUnavailable(ElanDeployError):
    """A runtime's package or hardware is missing; the message names the extra to install."""


class NonFiniteOutput(WorkFailed):
    """An engine produced NaN or Inf; the message names the engine and suggests a precision."""
