"""Timing through host spells: one timing per measurement against ``TeacherPace``'s retimes, side by side.

A shared host runs slower for spells of seconds (another tenant), and the ratio of a small
model to its teacher timed in the same rounds does not hold through them: LeNet-5 files timed
0.65x normally and up to 0.86x in a spell (``autocomp.measure.latency``). This script builds
LeNet-5 (random init: timing does not depend on the weights) as fp32, int8, int4 and a mixed
plan, and measures each file against the fp32 teacher over and over, in three arms interleaved
in one process, their order shuffled every round:

- ``once`` and ``once-bis``: one paired timing per measurement, as before ``TeacherPace`` (an
  A/A pair: how far two identical arms differ is the noise floor);
- ``paced``: the pair timed again, up to twice, while the teacher ran more than 10 % above the
  fastest median it was timed at beside an earlier file (its own pace, kept across rounds);
- ``paced5``: the same at 5 % (``TeacherPace(spell=0.05)``): what a tighter rule buys, and costs.

Per arm and file: the median ratio, its interquartile range and 5th-95th percentile range over
the measurements, the share of measurements whose kept teacher ran >10 % above the arm's
fastest teacher, and the paired timings per measurement (the cost).

    python experiments/bench_spells.py --minutes 4
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from autocomp.artifact import export
from autocomp.measure import MeasureConfig, TeacherPace, session_for
from autocomp.measure.latency import SPELL, paired_rounds
from autocomp.models.layers import compute_layers
from autocomp.models.zoo import LeNet5
from autocomp.pipeline.compress import apply
from autocomp.plan import LayerPlan, Plan

ARMS = ("once", "once-bis", "paced", "paced5")
SHAPE = (1, 28, 28)


def build(folder: Path) -> dict[str, Path]:
    torch.manual_seed(0)
    model = LeNet5().eval()
    x = torch.randn(32, *SHAPE)
    layers = list(compute_layers(model))
    plans = {"fp32": Plan(), "int8": Plan(layers={n: LayerPlan(bits=8) for n in layers}),
             "int4": Plan(layers={n: LayerPlan(bits=4) for n in layers}),
             "mixed": Plan(layers={n: LayerPlan(bits=8 if i % 2 else 4, channel_ratio=0.5 if i < 2 else 0.0)
                                   for i, n in enumerate(layers)})}
    out = {}
    for name, plan in plans.items():
        out[name] = folder / f"{name}.acz"
        export(apply(model, plan, x[:1]), x[:1], [x.numpy()], out[name])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=4.0, help="how long to keep measuring (default 4)")
    args = ap.parse_args()
    cfg = MeasureConfig()
    with tempfile.TemporaryDirectory() as tmp:
        paths = build(Path(tmp))
        teacher = session_for(paths["fp32"], cfg)
        files = {name: session_for(p, cfg) for name, p in paths.items() if name != "fp32"}
        paces = {"paced": TeacherPace(), "paced5": TeacherPace(spell=0.05)}
        rows: dict[tuple[str, str], list[tuple[float, float, int]]] = {(a, f): [] for a in ARMS for f in files}
        rng = random.Random(0)
        end = time.monotonic() + 60 * args.minutes
        while time.monotonic() < end:
            for arm in rng.sample(ARMS, len(ARMS)):
                for name, session in files.items():
                    def once(s=session):  # noqa: ANN202
                        return paired_rounds([s, teacher], SHAPE, cfg.batch, min_runs=cfg.min_runs,
                                             min_seconds=cfg.min_seconds)
                    pace = paces.get(arm, TeacherPace(spell=float("inf")))  # once: never timed again
                    rounds, timings = pace.rounds(once, teacher=1)
                    teacher_ms = rounds.timings()[1].median_ms
                    rows[(arm, name)].append((rounds.ratio(0, 1).median, teacher_ms, timings))
    fastest = {arm: min(t for (a, _), v in rows.items() if a == arm for _, t, _ in v) for arm in ARMS}
    print(f"{len(rows[(ARMS[0], 'int8')])} measurements per arm and file in {args.minutes:g} min")
    print(f"{'arm':9} {'file':6} {'median':>7} {'IQR':>6} {'p5-p95':>7} {'slow %':>7} {'timings':>8}")
    for (arm, name), v in rows.items():
        ratio = np.array([r for r, _, _ in v])
        slow = np.mean([t > (1 + SPELL) * fastest[arm] for _, t, _ in v])
        q5, q25, q50, q75, q95 = np.percentile(ratio, [5, 25, 50, 75, 95])
        print(f"{arm:9} {name:6} {q50:7.3f} {q75 - q25:6.3f} {q95 - q5:7.3f} {100 * slow:6.0f}% "
              f"{np.mean([n for _, _, n in v]):8.2f}")


if __name__ == "__main__":
    main()
