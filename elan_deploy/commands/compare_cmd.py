"""`elan-deploy compare OLD NEW`: two results.json files side by side, as `bench --compare` prints them.

Comparing saved runs needs no re-run: a CI job can keep every run's results.json and compare
any two later, and the figures in BENCHMARKS.md can be recomputed from the files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from elan_deploy.commands.comparison import print_comparison, read_results


def run_compare(args: argparse.Namespace) -> int:
    return print_comparison(read_results(args.old, "OLD"), read_results(args.new, "NEW"), str(args.old))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="compare two bench results.json files: p50 changes, regressions (exit 1 if any)")
    p.add_argument("old", type=Path, help="results.json of the earlier run")
    p.add_argument("new", type=Path, help="results.json of the later run")
    p.set_defaults(handler=run_compare)
