"""`elan-deploy`: take ELAN super-resolution from a PyTorch checkpoint to verified ONNX Runtime,
OpenVINO, TensorRT and Core ML engines, benchmark them on latency and PSNR, and upscale images.

Each subcommand is a thin adapter: it parses flags, calls the library, prints a table and
optionally writes JSON. User errors (`ElanDeployError`) print one line and exit 2 (bad usage)
or 1 (`WorkFailed`: the work itself failed); so do a full disk and an exhausted memory.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
from collections.abc import Callable, Sequence

from elan_deploy.errors import ElanDeployError

Handler = Callable[[argparse.Namespace], int]


# One module per subcommand under elan_deploy.commands, each with `register(subparsers)` that
# adds its parser and sets `handler`. Order here is the order in `--help`.
COMMAND_MODULES = (
    "bench_cmd", "compare_cmd", "diff_cmd", "export_cmd", "quantize_cmd", "build_cmd", "eval_cmd", "upscale_cmd",
    "serve_cmd", "triton_repo_cmd", "loadtest_cmd", "info_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="elan-deploy",
        description=" ".join(__doc__.split("\n\n")[0].split()),
        epilog="Run `elan-deploy COMMAND --help` for a command's flags. The main job: `elan-deploy bench --output bench-out`.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"elan_deploy.commands.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"elan_deploy.commands.{module_name}":
                raise
            continue
        module.register(sub)
    return parser


def _version() -> str:
    from elan_deploy import __version__

    return __version__


def disk_full(exc: BaseException) -> bool:
    """A full disk or quota, also when a runtime (OpenVINO, protobuf) wraps it in its own error."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return "No space left on device" in text or "Disk quota exceeded" in text


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    if not sys.stderr.isatty():  # coremltools' and others' tqdm bars would flood a log; ours print lines
        os.environ.setdefault("TQDM_DISABLE", "1")
    try:
        return handler(args)
    except ElanDeployError as exc:
        print(f"elan-deploy {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except MemoryError:
        print(
            f"elan-deploy {args.command}: error: out of memory; nothing half-written was kept: use a smaller --tile "
            "or --batch, or fewer --threads",
            file=sys.stderr,
        )
        return 1
    except Exception as exc:
        if not disk_full(exc):
            raise
        where = f" writing '{exc.filename}'" if getattr(exc, "filename", None) else ""
        print(
            f"elan-deploy {args.command}: error: no space left on the device{where}; nothing half-written was kept: "
            "free some space or choose another output or --cache-dir",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print(f"elan-deploy {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
