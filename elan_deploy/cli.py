"""`elan-deploy` command line.

Each subcommand is a thin adapter: it parses flags, calls the library, prints a table and
optionally writes JSON. User errors (`ElanDeployError`) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from elan_deploy.errors import ElanDeployError

Handler = Callable[[argparse.Namespace], int]


# One module per subcommand under elan_deploy.commands, each with `register(subparsers)` that
# adds its parser and sets `handler`. Order here is the order in `--help`.
COMMAND_MODULES = ("bench_cmd", "compare_cmd", "export_cmd", "quantize_cmd", "build_cmd", "eval_cmd", "upscale_cmd", "info_cmd")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="elan-deploy", description=__doc__.splitlines()[0])
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except ElanDeployError as exc:
        print(f"elan-deploy {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"elan-deploy {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
