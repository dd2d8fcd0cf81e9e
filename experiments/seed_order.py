"""Replay: the front's volume after the first fifth of the trials, had the seeds run in ``hv_order``.

A seed's trial does not depend on when it runs (the plan, its fine-tune seed and its data
order are fixed), so the seeds of a finished benchmark run can be put in another order and the
run scored again: HV@20% (``benchmark.early_volume``) of the trials as they ran, against the same
trials with the seeds renumbered in ``autocomp.study.frontier.hv_order`` of their untrained
files. Runs made after seeds were put in that order replay to themselves.

    python experiments/seed_order.py runs/benchmark/i21h_lenet5 runs/benchmark/i21h_lenet300

Each argument is a ``benchmark.py --out`` folder whose ``--storage`` was the folder's name plus
``.db`` (``runs/benchmark/NAME`` and ``runs/benchmark/NAME.db``); only the ``tpe`` rows are replayed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import optuna

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from benchmark import early_volume, load_runs  # noqa: E402

from autocomp.study.frontier import Seed, hv_order  # noqa: E402
from autocomp.study.records import read_trial  # noqa: E402


def replay(folder: Path, label: str = "tpe") -> list[tuple[int, int, float, float]]:
    """Per run of ``label``: (seed, seeds queued, HV@20% as run, HV@20% in ``hv_order``)."""
    config, teacher, runs = load_runs(folder / "runs.json")
    storage = f"sqlite:///{folder}.db"
    out = []
    for run in (r for r in runs if r.label == label):
        name = f"bench-{config.name}-{label}-s{run.seed}"[:100]
        trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
        seeds, numbers = [], []
        for t in trials:
            record = read_trial(t)
            if record.seeded and record.promoted_from is None:
                s = record.seeded
                seeds.append(Seed(dict(t.params), s["budget"], s["level"], s["limit"], s["predicted"],
                                  s.get("untrained")))
                numbers.append(t.number)
        if numbers != list(range(len(numbers))):
            raise SystemExit(f"{folder}: seed {run.seed}'s seeded trials are not its first trials; cannot replay")
        order = hv_order(seeds, teacher.size_bytes)
        renumber = {numbers[seeds.index(s)]: k for k, s in enumerate(order)}
        reordered = replace(run, points=_moved(run.points, renumber), replaced=_moved(run.replaced, renumber))
        out.append((run.seed, len(seeds), early_volume(run, teacher), early_volume(reordered, teacher)))
    return out


def _moved(points: list[dict], renumber: dict[int, int]) -> list[dict]:
    return [dict(p, trial=renumber.get(p.get("trial"), p.get("trial"))) for p in points]


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path, help="benchmark --out folders (storage: FOLDER.db)")
    args = ap.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    print("| run | seed | seeds | HV@20% as run | in hv_order |\n|---|---|---|---|---|")
    gains = []
    for folder in args.folders:
        rows = replay(folder)
        for seed, n, before, after in rows:
            print(f"| {folder.name} | {seed} | {n} | {before:.1f} % | {after:.1f} % |")
            gains.append(after - before)
        print(f"| {folder.name} | median | | {statistics.median(r[2] for r in rows):.1f} % "
              f"| {statistics.median(r[3] for r in rows):.1f} % |")
    print(f"\nhv_order higher in {sum(g > 0 for g in gains)} of {len(gains)} runs, lower in "
          f"{sum(g < 0 for g in gains)}; change {min(gains):+.1f} to {max(gains):+.1f} points "
          f"(median {statistics.median(gains):+.1f})")


if __name__ == "__main__":
    main()
