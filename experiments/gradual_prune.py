"""Whether a gradual sparsity ramp in the fine-tune beats one-shot magnitude pruning on LeNet-300-100.

Issue 21 asks for 40x smaller at no accuracy drop, and `sparse_long.py` showed that a longer
fine-tune of one-shot pruned plans does not get there (41x: 0.12 point down after 9600 steps).
Zhu & Gupta (2017) ramp each layer's sparsity from 0 to its target along a cubic,
s_t = s (1 - (1 - t / T)^3), over the first part T of the training, re-pruning by magnitude as
it goes. This script measures that ramp (the global `sparsity_ramp`, `methods.prune.ramp_masks`)
against one-shot masks (`sparsity_ramp: 0`, the default), on the same plans, the same fine-tune
lengths and the same artifacts:

    python experiments/gradual_prune.py                 # 600 and 2400 steps: about 3 minutes
    python experiments/gradual_prune.py --steps 600 --ramp 0.6
    python experiments/gradual_prune.py --steps 600,2400,9600 --seeds 0,1   # about 9 minutes
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI does, before torch is imported

import argparse
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch

from autocomp.config import SearchConfig, read_config_file
from autocomp.models.layers import compute_layers
from autocomp.pipeline import workbench
from autocomp.pipeline.setup import prepare
from autocomp.plan import LayerPlan, Plan
from autocomp.study.space import load_space

HERE = Path(__file__).resolve().parent


def main(argv: Sequence[str] | None = None) -> None:
    import sparse_long

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(HERE / "lenet300.yaml"))
    ap.add_argument("--steps", default="600,2400", help="fine-tune lengths, comma-separated")
    ap.add_argument("--ramp", type=float, default=0.6, help="share of the steps the sparsity ramps over")
    ap.add_argument("--seeds", default="0", help="fine-tune seeds (the Plan's seed), comma-separated")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    config = SearchConfig(**read_config_file(args.config))  # the run file's teacher: 10 epochs, full 60 k
    teacher, data = prepare(config, print)
    bench = workbench.Workbench(teacher, data, config.measure, config.device)
    template = Plan(distill=load_space("default").fixed_distill())
    fp32 = bench.teacher_path.stat().st_size
    print(f"teacher {bench.teacher_accuracy:.2f} %, fp32 artifact {fp32:,} bytes")
    with tempfile.TemporaryDirectory() as tmp:
        for steps in (int(s) for s in args.steps.split(",")):
            for name, per in sparse_long.PLANS.items():
                for seed in (int(s) for s in args.seeds.split(",")):
                    plan = replace(template, seed=seed,
                                   layers={n: LayerPlan(**per.get(n, {})) for n in compute_layers(teacher)})
                    for label, ramp in (("one-shot", 0.0), (f"ramp {args.ramp:g}", args.ramp)):
                        m = bench.run(plan.with_distill(steps=steps, sparsity_ramp=ramp), Path(tmp, "p.acz")).metrics
                        drop = m.accuracy - bench.teacher_accuracy
                        print(f"{steps} steps, {name}, seed {seed}, {label}: {m.accuracy:.2f} % ({drop:+.2f}), "
                              f"{fp32 / m.size_bytes:.1f}x smaller", flush=True)


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(HERE))
    main()
