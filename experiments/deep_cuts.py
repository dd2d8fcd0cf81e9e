"""How fast LeNet-5 runs with deeper channel cuts, and what a fine-tune leaves of its accuracy.

Why the `default` space cuts channels up to three quarters (experiments/README.md, issue 21):
each plan is measured untrained (as the profile's seed check measures a candidate) and after
each fine-tune length, timed beside the teacher on its artifact.

    python experiments/deep_cuts.py                      # 150 and 600 steps: about 5 minutes
    python experiments/deep_cuts.py --steps 150 --rounds 1
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
from autocomp.pipeline.setup import prepare
from autocomp.pipeline.workbench import Workbench
from autocomp.plan import LayerPlan, Plan
from autocomp.study.profile import measure_plans
from autocomp.study.space import load_space

HERE = Path(__file__).resolve().parent
C = "channel_ratio"
PLANS = {  # per-layer settings of LeNet-5's conv1, conv2, fc1 (fc2, the output layer, keeps its channels)
    "channels50": {"conv1": {C: 0.5}, "conv2": {C: 0.5}, "fc1": {C: 0.5}},
    "channels50, fc1 rank 0.125": {"conv1": {C: 0.5}, "conv2": {C: 0.5}, "fc1": {C: 0.5, "rank": 0.125}},
    "conv2 0.75": {"conv1": {C: 0.5}, "conv2": {C: 0.75}, "fc1": {C: 0.5}},
    "conv2 and fc1 0.75": {"conv1": {C: 0.5}, "conv2": {C: 0.75}, "fc1": {C: 0.75}},
    "all 0.75": {"conv1": {C: 0.75}, "conv2": {C: 0.75}, "fc1": {C: 0.75}},
}


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(HERE / "lenet5.yaml"))
    ap.add_argument("--steps", default="150,600", help="fine-tune lengths, comma-separated")
    ap.add_argument("--rounds", type=int, default=2, help="untrained timings per plan")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    # The teacher of the LeNet-5 benchmark commands (experiments/README.md): 5 epochs on 12 k images.
    config = replace(SearchConfig(**read_config_file(args.config)), train_samples=12000, teacher_epochs=5)
    teacher, data = prepare(config, print)
    bench = Workbench(teacher, data, config.measure, config.device)
    template = Plan(distill=load_space("default").fixed_distill())
    cases = {name: replace(template, layers={n: LayerPlan(**per.get(n, {})) for n in compute_layers(teacher)})
             for name, per in PLANS.items()}
    print(f"teacher {bench.teacher_accuracy:.2f} %")
    for rnd in range(args.rounds):
        for name, m in zip(cases, measure_plans(bench, list(cases.values())), strict=True):
            print(f"untrained #{rnd} {name}: latency x{m['latency_ratio']}" if m else f"{name}: failed")
    with tempfile.TemporaryDirectory() as tmp:
        for steps in (int(s) for s in args.steps.split(",")):
            for name, plan in cases.items():
                r = bench.run(replace(plan, distill=replace(plan.distill, steps=steps)), Path(tmp, "p.acz"))
                m = r.metrics
                print(f"{steps} steps {name}: {m.accuracy:.2f} %, latency x{m.latency_ratio:.3f} "
                      f"({m.latency_ratio_low:.3f}-{m.latency_ratio_high:.3f})", flush=True)


if __name__ == "__main__":
    main()
