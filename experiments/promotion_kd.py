"""Paired A/B of a long promotion's KD settings: the temperature and weight its search picked against
``promotion.LONG_KD``, on a finished benchmark's promoted plans that are the most compressed.

A promotion of ``promotion.LONG_FINETUNE`` steps or more distils with ``LONG_KD`` in place of the
KD settings the space searches (``promotion.promoted_plan``): those were picked on a fine-tune of
150 steps. This script takes the promoted trials of finished benchmark runs (``benchmark.py
--out``, with ``--storage`` the folder's name plus ``.db``) whose artifact is ``--min-x`` times
smaller than the teacher's or more, runs each plan with the KD settings of the trial it promoted
(the searched ones) and with ``LONG_KD``, everything else equal, for each fine-tune seed in
``--seeds`` (added to the plan's seed: 0 is the plan as stored; the same plan at the same seed,
found in several seeds' studies, runs once), and prints the accuracies side by side and how many
runs end at or above the teacher. ``--kd temperature=2`` compares one setting alone.

    python experiments/promotion_kd.py runs/benchmark/i21j_lenet300 runs/benchmark/i21j_lenet300_s34 --seeds 0,1,2
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI does, before torch is imported

import argparse
import json
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import optuna
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from benchmark import load_runs, promotions  # noqa: E402

from autocomp.config import SearchConfig  # noqa: E402
from autocomp.pipeline import workbench  # noqa: E402
from autocomp.pipeline.setup import prepare  # noqa: E402
from autocomp.plan import Plan  # noqa: E402
from autocomp.study.promotion import LONG_KD  # noqa: E402
from autocomp.study.records import read_trial  # noqa: E402


def compressed_promotions(folder: Path, label: str, min_x: float,
                          kd: dict[str, float]) -> tuple[SearchConfig, list[tuple[str, float, Plan, Plan]]]:
    """The run's config and, per promotion ``min_x`` times smaller or more: its name, how many
    times smaller, its plan with the searched KD settings and with ``kd``."""
    config, teacher, _ = load_runs(folder / "runs.json")
    out = []
    for seed, trials, t, record in promotions(folder, label):
        x = teacher.size_bytes / record.metrics["size_bytes"]
        if x < min_x:
            continue
        searched = read_trial(trials[record.promoted_from]).plan.distill
        plan = record.plan.with_distill(temperature=searched.temperature, alpha=searched.alpha)
        out.append((f"seed {seed} trial {t.number}", x, plan, plan.with_distill(**kd)))
    return config, out


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", type=Path, nargs="+", help="benchmark.py --out folders (their studies in FOLDER.db)")
    ap.add_argument("--label", default="tpe", help="the benchmark row whose promotions to run (default tpe)")
    ap.add_argument("--min-x", type=float, default=40.0, help="only promotions this many times smaller or more")
    ap.add_argument("--seeds", default="0", help="fine-tune seeds, added to each plan's (default 0: as stored)")
    ap.add_argument("--kd", default=",".join(f"{k}={v:g}" for k, v in LONG_KD.items()),
                    help="the settings to compare with the searched ones (default LONG_KD's: %(default)s)")
    args = ap.parse_args(argv)
    try:
        kd = {k: float(v) for k, v in (item.split("=") for item in args.kd.split(","))}
    except ValueError:
        ap.error(f"--kd wants key=number pairs, got {args.kd!r}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)
    found = [compressed_promotions(f, args.label, args.min_x, kd) for f in args.folders]
    if len({config.name for config, _ in found}) != 1:
        sys.exit("promotion_kd.py: the folders are runs of different configs")
    config, plans = found[0][0], [p for _, ps in found for p in ps]
    model, data = prepare(config, print)
    bench = workbench.Workbench(model, data, config.measure, config.device)
    teacher = bench.teacher_accuracy
    print(f"teacher {teacher:.2f} %; {len(plans)} promotions {args.min_x:g}x smaller or more; against {kd}",
          flush=True)
    gains, at_teacher, seen = [], {"searched": 0, "other": 0}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for shift in (int(s) for s in args.seeds.split(",")):
            for name, x, searched, long in plans:
                # A profile-seeded plan recurs in several seeds' studies, its plan seed the study's:
                # the same plan at the same fine-tune seed is the same run, counted once.
                key = json.dumps(replace(searched, seed=searched.seed + shift).to_dict(), sort_keys=True)
                if key in seen:
                    print(f"{name}, fine-tune seed +{shift}: the run of {seen[key]}, counted there", flush=True)
                    continue
                seen[key] = f"{name} at +{shift}"
                a, b = (bench.run(replace(p, seed=p.seed + shift), Path(tmp, "a.acz")).metrics.accuracy
                        for p in (searched, long))
                gains.append(b - a)
                at_teacher["searched"] += a >= teacher
                at_teacher["other"] += b >= teacher
                d = searched.distill
                print(f"{name} ({x:.1f}x), fine-tune seed +{shift}: searched T {d.temperature:.1f} alpha "
                      f"{d.alpha:.2f} {a - teacher:+.2f}, {args.kd} {b - teacher:+.2f}: {b - a:+.2f}", flush=True)
    if gains:
        ahead, behind = sum(g > 0 for g in gains), sum(g < 0 for g in gains)
        print(f"{len(gains)} pairs: {args.kd} ahead in {ahead}, behind in {behind}, equal in "
              f"{len(gains) - ahead - behind}; mean {statistics.mean(gains):+.3f} point, median "
              f"{statistics.median(gains):+.2f}, range {min(gains):+.2f} to {max(gains):+.2f}; at or above the "
              f"teacher: searched {at_teacher['searched']}, {args.kd} {at_teacher['other']} of {len(gains)}")


if __name__ == "__main__":
    main()
