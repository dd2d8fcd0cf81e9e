"""Command line: ``autocomp search | report | export | spaces | device``, one module per command.

Each command's module (``autocomp.cli.search`` ...) holds its parser setup (``add_parser``) and
its handler (``run``); this one assembles them and turns a user's mistake into one line
``autocomp: error: ...`` and exit status 2, a disk or storage that stops taking writes into one
line and exit status 1 (2 for a place the user chose that may not be written:
``autocomp.errors.storage_fault``); Ctrl-C exits 130. Heavy imports (torch, optuna, plotly)
happen inside the handlers so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from collections.abc import Sequence

from autocomp.cli import device, export, report, search, spaces
from autocomp.errors import AutocompError, StorageFault, storage_fault

COMMANDS = (search, report, export, spaces, device)  # in the order ``autocomp --help`` lists them


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
        with _quiet_faults():
            return args.func(args)
    except AutocompError as exc:
        print(f"autocomp: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("autocomp: interrupted; finished trials are kept", file=sys.stderr)
        return 130
    except (Exception, StorageFault) as exc:  # noqa: BLE001 (only a disk or storage fault is caught)
        fault = storage_fault(exc)
        if fault is None:
            raise
        print(f"autocomp: error: {fault}", file=sys.stderr)
        return fault.exit_code


class _quiet_faults:  # noqa: N801 (used as a with-statement)
    """While a command runs: a storage fault in another thread (Optuna's heartbeat) is left to
    the main thread, which reports it in one line, instead of printing its traceback; and a log
    file that can no longer be written (full disk) does not print "--- Logging error ---"."""

    def __enter__(self) -> None:
        self._hook, self._raise = threading.excepthook, logging.raiseExceptions
        hook = self._hook

        def quiet(args: threading.ExceptHookArgs) -> None:
            if args.exc_value is None or storage_fault(args.exc_value) is None:
                hook(args)

        threading.excepthook = quiet
        logging.raiseExceptions = False

    def __exit__(self, *exc: object) -> None:
        threading.excepthook, logging.raiseExceptions = self._hook, self._raise
