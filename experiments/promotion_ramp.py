"""Paired A/B of the sparsity ramp on a search's own promotions: each promoted plan run again one-shot.

A promotion of ``promotion.LONG_FINETUNE`` steps or more ramps its plan's sparsity
(``promotion.promoted_plan``). This script takes the promoted trials of a finished benchmark
run (``benchmark.py --out``, with ``--storage`` the folder's name plus ``.db``), runs each of
their plans that prune with a ramp again with ``sparsity_ramp: 0`` (one-shot masks from the first
step), everything else equal, and prints the two accuracies side by side. The first ``--check``
plans also run again as stored, to show that the study's figure repeats in this process (the
fine-tune seed and the data order are the plan's).

    python experiments/promotion_ramp.py runs/benchmark/i21j_lenet300     # 30 promotions: ~10 min
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI does, before torch is imported

import argparse
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import optuna
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from benchmark import load_runs, promotions  # noqa: E402

from autocomp.pipeline import workbench  # noqa: E402
from autocomp.pipeline.setup import prepare  # noqa: E402


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="a benchmark.py --out folder (its studies in FOLDER.db)")
    ap.add_argument("--label", default="tpe", help="the benchmark row whose promotions to replay")
    ap.add_argument("--check", type=int, default=2, help="plans also run again as stored (default 2)")
    args = ap.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)
    config, teacher, _ = load_runs(args.folder / "runs.json")
    model, data = prepare(config, print)
    bench = workbench.Workbench(model, data, config.measure, config.device)
    print(f"teacher {bench.teacher_accuracy:.2f} % (the benchmark's: {teacher.accuracy:.2f} %)", flush=True)
    gains = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed, _, t, record in promotions(args.folder, args.label):
            if not record.plan.distill.sparsity_ramp or not any(
                    layer.sparsity for layer in record.plan.layers.values()):
                continue  # a short promotion (one-shot already) or nothing pruned: nothing to compare
            plan, ramped = record.plan, record.metrics["accuracy"]
            if len(gains) < args.check:
                again = bench.run(plan, Path(tmp, "a.acz")).metrics.accuracy
                print(f"  check: trial {t.number} as stored {ramped:.2f} %, again {again:.2f} %", flush=True)
            one_shot = bench.run(plan.with_distill(sparsity_ramp=0.0), Path(tmp, "b.acz")).metrics
            gains.append(ramped - one_shot.accuracy)
            print(f"seed {seed} trial {t.number} ({record.metrics['size_bytes']:,} B, "
                  f"{plan.distill.steps} steps): ramp {plan.distill.sparsity_ramp:g} {ramped:.2f} %, "
                  f"one-shot {one_shot.accuracy:.2f} % ({one_shot.size_bytes:,} B): {gains[-1]:+.2f}", flush=True)
    if gains:
        ahead, behind = sum(g > 0 for g in gains), sum(g < 0 for g in gains)
        print(f"{len(gains)} promotions: the ramp ahead in {ahead}, behind in {behind}, equal in "
              f"{len(gains) - ahead - behind}; median {statistics.median(gains):+.2f} point, "
              f"range {min(gains):+.2f} to {max(gains):+.2f}")


if __name__ == "__main__":
    main()
