"""``autocomp report``: the HTML report and tables of a study, and the point it recommends."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("report", help="write the HTML report and tables of a study; recommend a point")
    r.add_argument("--storage", required=True, help="Optuna storage URL of the study")
    r.add_argument("--study-name", required=True, help="study name")
    r.add_argument("--out", required=True, help="output directory")
    r.add_argument("--max-drop", type=float, default=1.0, help="largest accuracy drop in points (default 1.0)")
    r.add_argument("--max-size", type=int, default=None, help="largest artifact size in bytes")
    r.add_argument("--max-latency", type=float, default=None, help="largest latency in ms")
    r.add_argument("--prefer", choices=["size", "latency", "accuracy"], default=None,
                   help="what 'best' means among the points within the limits (default size); given, or with "
                   "--max-latency, a point slower than the teacher may be recommended (by default one that is "
                   "not slower wins whenever one meets the limits)")
    r.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from autocomp.report import write_report
    from autocomp.report.recommend import recommend_text
    from autocomp.study.create import load_existing_study

    study = load_existing_study(args.storage, args.study_name)
    limits = ship_limits(args)
    paths = write_report(study, args.out, storage=args.storage, **limits)
    print(f"report: {paths['html']}\ntrials table: {paths['csv']}")
    print(recommend_text(study, args.storage, **limits))
    return 0


def ship_limits(args: argparse.Namespace) -> dict[str, Any]:
    """The recommendation's limits from the flags: a point slower than the teacher may win only
    when the user asked for it, by ``--max-latency`` or an explicit ``--prefer`` (default size)."""
    return {"max_drop": args.max_drop, "max_size": args.max_size, "max_latency": args.max_latency,
            "prefer": args.prefer or "size", "allow_slower": args.prefer is not None or args.max_latency is not None}
