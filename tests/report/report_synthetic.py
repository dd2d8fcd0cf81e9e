"""Synthetic studies for the report tests: built with ``study.add_trial``, no search, milliseconds.

A helper module (unique name, imported by the tests and by ``conftest.py``), not a conftest,
so ``from report_synthetic import ...`` never meets another directory's ``conftest``.

Trials look like ``autocomp search`` writes them: values [accuracy, size_bytes, latency_ms],
user attrs ``plan``/``metrics``/``baseline``/``fail_reason``/``seconds``, study attrs for the
teacher, parameter names ``{layer}.{knob}`` and ``distill.temperature``.
"""

from __future__ import annotations

import datetime as dt
import random
import re
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import FrozenTrial, TrialState

# Model order on purpose not alphabetical: the report must keep it.
LAYERS = ["features.0", "features.3", "features.10", "classifier"]
TEACHER = {"accuracy": 98.0, "size_bytes": 100_000, "latency_ms": 0.05}
BASELINES = {  # name -> (values, uniform layer plan)
    "teacher": ((98.0, 100_000, 0.05), None),
    "int8": ((97.9, 26_000, 0.03), {"bits": 8}),
    "prune50": ((96.5, 52_000, 0.05), {"sparsity": 0.5}),
}
START = dt.datetime(2025, 1, 1, 12, 0, 0)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def layer_plan(sparsity: float = 0.0, channel_ratio: float = 0.0, bits: int | None = None,
               rank: float = 1.0) -> dict[str, Any]:
    return {"sparsity": sparsity, "channel_ratio": channel_ratio, "bits": bits, "rank": rank}


def plan(layers: dict[str, dict[str, Any]], temperature: float = 4.0) -> dict[str, Any]:
    return {"version": 1, "layers": layers, "quant_mode": "qat", "seed": 0,
            "distill": {"temperature": temperature, "alpha": 0.7, "l1": 0.0, "steps": 100, "lr": 1e-3,
                        "batch_size": 64}}


def metrics(acc: float, size: int, lat: float) -> dict[str, Any]:
    return {"accuracy": acc, "size_bytes": size, "latency_ms": lat, "latency_p90_ms": lat * 1.1,
            "teacher_latency_ms": TEACHER["latency_ms"], "params": 1000, "nonzero_params": 900, "macs": 5000}


def distributions() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for layer in LAYERS:
        out[f"{layer}.sparsity"] = FloatDistribution(0.0, 0.9, step=0.05)
        if layer != "classifier":  # the head keeps its outputs, as in the real spaces
            out[f"{layer}.channel_ratio"] = FloatDistribution(0.0, 0.5, step=0.125)
        out[f"{layer}.bits"] = CategoricalDistribution([None, 2, 4, 8])
        out[f"{layer}.rank"] = FloatDistribution(0.25, 1.0, step=0.25)
    out["distill.temperature"] = FloatDistribution(1.0, 8.0)
    return out


def _sample(rng: random.Random, dists: dict[str, Any]) -> dict[str, Any]:
    params = {}
    for name, d in dists.items():
        if isinstance(d, CategoricalDistribution):
            params[name] = rng.choice(d.choices)
        elif d.step:
            params[name] = d.low + d.step * rng.randint(0, round((d.high - d.low) / d.step))
        else:
            params[name] = rng.uniform(d.low, d.high)
    return params


def _outcome(rng: random.Random, p: dict[str, Any]) -> tuple[float, int, float]:
    """Accuracy driven by sparsity and 2-bit layers, size by bits/sparsity/rank, latency by rank/channels."""
    frac = sum((p[f"{x}.bits"] or 32) / 32 * (1 - p[f"{x}.sparsity"]) * p[f"{x}.rank"]
               * (1 - p.get(f"{x}.channel_ratio", 0.0)) for x in LAYERS) / len(LAYERS)
    size = int(100_000 * max(frac, 0.005)) + rng.randint(0, 300)
    acc = 98.0 - 8 * sum(p[f"{x}.sparsity"] ** 3 for x in LAYERS) - sum(1.5 for x in LAYERS if p[f"{x}.bits"] == 2)
    acc -= rng.random() * 0.4
    speed = sum(p[f"{x}.rank"] * (1 - p.get(f"{x}.channel_ratio", 0.0)) for x in LAYERS) / len(LAYERS)
    return acc, size, 0.05 * (0.4 + 0.6 * speed) + rng.random() * 0.002


def build_study(n: int = 30, seed: int = 0, storage: str | None = None, name: str = "synthetic",
                baselines: bool = True, teacher_attrs: bool = True) -> optuna.Study:
    """``n`` searched trials after the baselines; every 10th (from the 8th) fails, every 10th (from
    the 10th) is stopped early, each with a reason; durations grow with the trial number."""
    rng = random.Random(seed)
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"], storage=storage, study_name=name)
    if teacher_attrs:
        study.set_user_attr("teacher_accuracy", TEACHER["accuracy"])
        study.set_user_attr("teacher_size_bytes", TEACHER["size_bytes"])
    number = 0

    def add(state: TrialState, values: Any, params: dict[str, Any], dists: dict[str, Any],
            attrs: dict[str, Any]) -> None:
        nonlocal number
        start = START + dt.timedelta(seconds=10 * number)
        end = start + dt.timedelta(seconds=1.25 + 0.5 * number) if state != TrialState.RUNNING else None
        study.add_trial(FrozenTrial(number=number, state=state, value=None, values=values, datetime_start=start,
                                    datetime_complete=end, params=params, distributions=dists, user_attrs=attrs,
                                    system_attrs={}, intermediate_values={}, trial_id=number))
        number += 1

    if baselines:
        for name_, (vals, uniform) in BASELINES.items():
            layers = {x: layer_plan(**uniform) for x in LAYERS} if uniform else {}
            add(TrialState.COMPLETE, list(vals), {}, {},
                {"baseline": name_, "plan": plan(layers), "metrics": metrics(*vals), "eager_accuracy": vals[0]})
    dists = distributions()
    for i in range(n):
        params = _sample(rng, dists)
        layers = {x: layer_plan(params[f"{x}.sparsity"], params.get(f"{x}.channel_ratio", 0.0),
                                params[f"{x}.bits"], params[f"{x}.rank"]) for x in LAYERS}
        attrs: dict[str, Any] = {"plan": plan(layers, params["distill.temperature"])}
        if i % 10 == 7:
            add(TrialState.FAIL, None, params, dists, {**attrs, "fail_reason": f"out of memory in trial {i}"})
            continue
        if i % 10 == 9:
            add(TrialState.PRUNED, None, params, dists, {**attrs, "fail_reason": "hopeless: 40.0% at step 50"})
            continue
        acc, size, lat = _outcome(rng, params)
        attrs.update(metrics=metrics(acc, size, lat), eager_accuracy=acc + 0.05,
                     seconds={"finetune": 1.0 + i / 100, "export": 0.1, "total": 1.2 + i / 100})
        add(TrialState.COMPLETE, [acc, float(size), lat], params, dists, attrs)
    return study


FIGURES = ["pareto-2d", "pareto-3d", "hypervolume", "policy", "importance"]  # report.html, in page order


def figures_in(page: str) -> list[str]:
    """Names of the figure wrappers in a report page (or its rendered DOM), in order."""
    return re.findall(r"data-figure=['\"]([\w-]+)['\"]", page)
