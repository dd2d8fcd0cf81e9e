"""Command line: ``autocomp search | report | export | spaces``, one module per command.

Each command's module (``autocomp.cli.search`` ...) holds its parser setup (``add_parser``) and
its handler (``run``); this one assembles them and turns a user's mistake into one line
``autocomp: error: ...`` and exit status 2; Ctrl-C exits 130. Heavy imports (torch, optuna,
plotly) happen inside the handlers so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from autocomp.cli import export, report, search, spaces
from autocomp.errors import AutocompError

COMMANDS = (search, report, export, spaces)  # in the order ``autocomp --help`` lists them


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autocomp",
        description="Search per-layer pruning, quantization, low rank and distillation for a PyTorch model. "
        "Every point is measured on the artifact you ship.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # OpenMP threads that spin while waiting collapse when the cores are shared (a fine-tune
    # ran 40 s instead of 6 s on a loaded 2-core machine); sleeping threads degrade gracefully.
    # Set before torch is imported; a user's own setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except AutocompError as exc:
        print(f"autocomp: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("autocomp: interrupted; finished trials are kept", file=sys.stderr)
        return 130
