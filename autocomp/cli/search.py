"""``autocomp search``: its flags are generated from ``SearchConfig``'s fields.

Each field's metadata gives the flag's group and help (``autocomp.config``); the type comes from
its annotation. Every flag defaults to None, so a flag given overrides a ``--config`` file and a
flag left out leaves the file's value (or the field's default). A switch sets the opposite of
its field's default (``--download``, ``--no-keep-artifacts``).
"""

from __future__ import annotations

import argparse
from dataclasses import Field, fields
from typing import Any

from autocomp.config import GROUPS, SearchConfig
from autocomp.errors import AutocompError


def flag_of(f: Field) -> str:
    """The command-line flag of a ``SearchConfig`` field: ``--n-trials``, ``--no-keep-artifacts``."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def add_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("search", help="run (or resume) a compression search and write its report",
                       description="Run or resume a search. With no arguments: the builtin digits CNN on "
                       "scikit-learn's digits, 50 trials, offline.")
    s.add_argument("--config", help="YAML file holding any of the settings below (flags override it)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    groups = {name: s.add_argument_group(f"{name} settings", text) for name, text in GROUPS.items()}
    for f in fields(SearchConfig):
        group, text = groups[f.metadata["group"]], f.metadata["help"].replace("%", "%%")  # argparse formats %
        kind = str(f.type).split(" |")[0]
        if kind == "bool":
            group.add_argument(flag_of(f), dest=f.name, action="store_const", const=not f.default, default=None,
                               help=text)
        else:
            group.add_argument(flag_of(f), dest=f.name, type={"int": int, "float": float}.get(kind, str),
                               default=None, help=text)
    s.set_defaults(func=run)


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--config`` file's settings with the flags given laid over them, as ``SearchConfig`` takes them."""
    from autocomp.config import read_config_file

    out = read_config_file(args.config) if args.config else {}
    for f in fields(SearchConfig):
        value = getattr(args, f.name)
        if value is None:
            continue
        kind = str(f.type)
        if kind.startswith("tuple[float"):
            value = parse_numbers(flag_of(f), value)
        elif kind.startswith("tuple"):  # --baselines a,b ("" is none at all)
            value = tuple(v.strip() for v in value.split(",") if v.strip())
        out[f.name] = value
    return out


def run(args: argparse.Namespace) -> int:
    from autocomp.api import run_search

    run_search(SearchConfig(**settings(args)), progress=not args.no_progress)
    return 0


def parse_numbers(flag: str, text: str) -> tuple[float, ...]:
    """``"0.485,0.456,0.406"`` -> floats, or a one-line error naming the flag."""
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values:
        raise AutocompError(f"{flag}: must be comma-separated numbers (one per channel), got {text!r}")
    return values
