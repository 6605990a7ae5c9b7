"""Flags shared by several subcommands."""

from __future__ import annotations

import argparse


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="elan-light", help="config name (bundled weights) or checkpoint path [elan-light]")
    parser.add_argument("--scale", type=int, default=4, choices=(2, 3, 4), help="upscaling factor [4]")
