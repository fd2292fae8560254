"""The `lglsearch` command line: one module per command group, each with its `add_parsers`.

Each subcommand parses its arguments, calls the library and prints. A `LglsearchError` becomes
one line on stderr and exit status 2; nothing else is caught. Heavy imports (torch, onnxruntime,
Ray) happen inside the commands that need them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lglsearch.cli import _ablation, _models, _searching, _tables, _training
from lglsearch.cli._args import COUNT, FRACTION, NATURAL, NATURAL_FLOAT, POSITIVE, Parser, Ranged
from lglsearch.errors import LglsearchError

__all__ = ["COUNT", "FRACTION", "NATURAL", "NATURAL_FLOAT", "POSITIVE", "Ranged", "build_parser", "main"]

_GROUPS = (_searching, _models, _tables, _training, _ablation)
"""The command groups, in the order `--help` lists their commands."""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="lglsearch", description="Architecture search over the EdgeViT local-global-local design space."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in _GROUPS:
        group.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except LglsearchError as err:
        sub_command = getattr(args, "lut_command", None) or getattr(args, "supernet_command", None)
        command = " ".join(filter(None, (args.command, sub_command)))
        print(f"lglsearch {command}: error: {err}", file=sys.stderr)
        return 2
    return 0
