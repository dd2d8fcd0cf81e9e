"""The seeded frontier: seeds that are points of the space, checked on their artifacts."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
import torch

from autocomp.study.baselines import in_domain
from autocomp.study.frontier import Seed, hv_order, seed_plans
from autocomp.study.knapsack import layer_options
from autocomp.study.space import load_space


def _record(model: torch.nn.Module) -> dict:
    """A synthetic profile of the tiny CNN: damage grows with the change, bytes and time shrink."""
    entries = []
    for layer, size in (("0", 320), ("3", 4672), ("7", 8320), ("9", 1320)):
        for knob, values in (("bits", (8, 6, 4)), ("sparsity", (0.05, 0.25, 0.5, 0.7, 0.9)),
                             ("channel_ratio", (0.125, 0.25, 0.5)), ("rank", (0.75, 0.5, 0.25))):
            for i, v in enumerate(values):
                strength = (i + 1) / len(values)
                entries.append({"layer": layer, "knob": knob, "param": f"{layer}.{knob}", "value": v,
                                "kl": 0.01 * strength ** 2 * (2 if knob == "rank" else 1), "agreement": 99.0,
                                "bytes": -int(size * strength * 0.8), "latency": [1 - 0.05 * strength, 0.9, 1.0]})
    return {"teacher_bytes": 16_000, "layer_bytes": {"0": 320, "3": 4672, "7": 8320, "9": 1320},
            "entries": entries, "num_classes": 10}


def test_a_layer_keeps_only_combinations_no_other_beats_on_damage_bytes_and_time() -> None:
    from tiny_models import tiny_cnn

    options = layer_options(_record(tiny_cnn()))
    for opts in options.values():
        assert opts[0].values == {}  # the no-op is never beaten: it does no damage
        for o in opts:
            assert not any(p.damage <= o.damage and p.bytes <= o.bytes and p.latency <= o.latency
                           and (p.damage, p.bytes, p.latency) != (o.damage, o.bytes, o.latency) for p in opts)


def test_every_seeded_plan_is_a_point_of_the_space_and_its_params_read_back_to_the_same_plan() -> None:
    from tiny_models import tiny_cnn

    from autocomp.models.layers import output_layers

    model = tiny_cnn().eval()
    outputs = output_layers(model, torch.zeros(1, 1, 8, 8))
    space = load_space("default")
    seeds = seed_plans(_record(model), space, model, outputs, n=6)
    assert len(seeds) >= 4 and {s.budget for s in seeds} == {"size", "latency"}
    sizes = [s.predicted["size_bytes"] for s in sorted(seeds, key=lambda s: s.level) if s.budget == "size"]
    assert sizes == sorted(sizes) and all(s.predicted["size_bytes"] <= s.limit + 1 for s in seeds if s.budget == "size")
    domains = {p.name: p.spec for p in space.params(model, outputs) if p.spec.searched}
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    for seed in seeds:
        assert set(domains) <= set(seed.params)  # every searched dimension is given: nothing left to chance
        assert all(in_domain(domains[k], v) for k, v in seed.params.items() if k in domains)
        plan = space.sample(optuna.trial.FixedTrial(seed.params), model, outputs)
        study.enqueue_trial(seed.params)
        assert space.sample(study.ask(), model, outputs) == plan
        assert plan.active_layers  # a seed compresses something


@pytest.mark.parametrize("n", [0, 1])
def test_few_seeds(n: int) -> None:
    from tiny_models import tiny_cnn

    from autocomp.models.layers import output_layers

    model = tiny_cnn().eval()
    seeds = seed_plans(_record(model), load_space("default"), model, output_layers(model, torch.zeros(1, 1, 8, 8)), n)
    assert len(seeds) == n and all(s.budget == "size" for s in seeds)


def _fake_artifacts(record: dict) -> object:
    """Measures a plan as the additive model predicts it, except that a layer running both a
    channel cut and low bits is 1.3x slower (an interaction the model cannot see)."""
    entries = {(e["param"], e["value"]): e for e in record["entries"]}

    def measure(points: list[dict]) -> list[dict]:
        out = []
        for params in points:
            picked = [entries[(k, v)] for k, v in params.items() if (k, v) in entries]
            latency = float(np.prod([e["latency"][0] for e in picked if e["knob"] != "sparsity"]))
            for layer in {e["layer"] for e in picked}:
                if {"bits", "channel_ratio"} <= {e["knob"] for e in picked if e["layer"] == layer}:
                    latency *= 1.3
            out.append({"kl": sum(e["kl"] for e in picked), "agreement": 99.0,
                        "size_bytes": max(1, record["teacher_bytes"] + sum(e["bytes"] for e in picked) // 2),
                        "latency_ratio": [latency, latency * 0.98, latency * 1.02]})
        return out

    return measure


def test_seeds_checked_on_their_artifacts_avoid_what_the_additive_model_misses() -> None:
    from tiny_models import tiny_cnn

    from autocomp.models.layers import output_layers

    model = tiny_cnn().eval()
    outputs = output_layers(model, torch.zeros(1, 1, 8, 8))
    space, record = load_space("default"), _record(model)
    measure = _fake_artifacts(record)
    unchecked = seed_plans(record, space, model, outputs, n=6)
    checked = seed_plans(record, space, model, outputs, n=6, measure=measure)
    assert {s.budget for s in checked} == {"size", "latency"}
    for seed in checked:
        assert seed.untrained == measure([seed.params])[0]  # each seed carries its own measurement
        layers = {k.rsplit(".", 1)[0] for k in seed.params if "." in k and not k.startswith("distill.")}
        if seed.budget == "latency":  # no layer pays the interaction the measurement shows
            assert not any(seed.params.get(f"{layer}.bits") is not None
                           and seed.params.get(f"{layer}.channel_ratio", 0.0) > 0 for layer in layers)

    def fastest(seeds: list) -> float:
        return min(measure([s.params])[0]["latency_ratio"][0] for s in seeds if s.budget == "latency")

    assert fastest(checked) < fastest(unchecked)
    # Values that buy no time are undone: the fake times sparsity as free, so the tightest
    # latency seed keeps none (the next ones may keep one to differ from it).
    tightest = next(s for s in checked if s.budget == "latency")
    assert not any(v for k, v in tightest.params.items() if k.endswith(".sparsity"))
    assert any(v for s in unchecked if s.budget == "latency" for k, v in s.params.items() if k.endswith(".sparsity"))


def _against_hand_picks() -> tuple:
    """The fake measurement, the default space's hand-picked baselines on the tiny CNN, and
    ``seed(n)``: ``n`` budgets' seeds checked against them."""
    from tiny_models import tiny_cnn

    from autocomp.config import SearchConfig
    from autocomp.models.layers import output_layers
    from autocomp.study.baselines import baseline_points

    model = tiny_cnn().eval()
    outputs = output_layers(model, torch.zeros(1, 1, 8, 8))
    space, record = load_space("default"), _record(model)
    measure = _fake_artifacts(record)
    hand = {name: params for name, (params, _) in baseline_points(space, model, outputs, SearchConfig()).items()
            if params and name != "teacher"}
    return measure, hand, lambda n: seed_plans(record, space, model, outputs, n=n, measure=measure, references=hand)


def test_a_seed_beats_each_hand_picked_plan_on_bytes_and_time_when_a_candidate_does() -> None:
    measure, hand, seed = _against_hand_picks()
    assert {"int8", "int4", "channels50"} <= set(hand)
    seeds = sorted(seed(4), key=lambda s: s.level)  # in the order they were picked
    levels = [s.level for s in seeds]  # 4 budgets (one may have no seed), then the beating ones
    assert levels == sorted(set(levels))
    assert len({tuple(sorted(s.params.items())) for s in seeds}) == len(seeds)
    assert not any(s.params == params for s in seeds for params in hand.values())  # baselines run those
    extra = [s for s in seeds if s.level >= 4]
    assert extra and all(s.budget == "size" for s in extra)
    refs = [measure([params])[0] for params in hand.values()]
    for seed in extra:  # smaller than its reference, and at least 3 % faster
        assert any(seed.limit == ref["size_bytes"] > seed.untrained["size_bytes"]
                   and seed.untrained["latency_ratio"][0] <= 0.97 * ref["latency_ratio"][0] for ref in refs)


def test_no_seed_repeats_on_its_file_what_another_seed_or_a_hand_picked_plan_gives(monkeypatch) -> None:
    from autocomp.study.frontier import KL_NEAR, REFINE_STEP

    measure, hand, seed = _against_hand_picks()
    seeds = sorted(seed(8), key=lambda s: s.level)  # in the order they were picked
    files = [s.untrained for s in seeds]

    def covers(t: dict, m: dict) -> bool:  # t gives what m gives: no more damage, bytes and time within 3 %
        return (t["kl"] <= m["kl"] * (1 + REFINE_STEP) + KL_NEAR and t["size_bytes"] <= m["size_bytes"] * 1.03
                and t["latency_ratio"][0] <= m["latency_ratio"][0] * 1.03)

    assert len(seeds) >= 4
    for i, m in enumerate(files):
        assert not any(covers(t, m) for t in files[:i]), i  # each seed gives something the earlier ones do not
        assert not any(covers(t, m) for t in measure(list(hand.values())))  # nor does a baseline
    # Without the rule, the same budgets took plans that repeat another's file.
    from autocomp.study import frontier

    monkeypatch.setattr(frontier, "_redundant", lambda *a: False)
    loose = [s.untrained for s in sorted(seed(8), key=lambda s: s.level)]
    assert any(covers(t, m) for i, m in enumerate(loose) for t in loose[:i])


def _seed(kl: float, size: float, latency: float, level: int, measured: bool = True) -> Seed:
    values = {"kl": kl, "size_bytes": size, "latency_ratio": [latency, latency, latency] if measured else None}
    return Seed({"x": level}, "size", level, 0.0, {"kl": kl, "size_bytes": size, "latency_ratio": latency},
                values if measured else None)


def test_seeds_run_in_the_order_that_adds_the_most_front_first() -> None:
    """Volumes in a unit box (KL over the largest KL x 1.01, bytes over the teacher's, latency):
    ``wide`` 0.999 x 0.55 x 0.12 = 0.066, ``fast`` (KL 1 nat, the largest) 0.0099 x 0.7 x 0.7
    = 0.0049, ``slow`` 0.05; ``slow`` lies inside ``wide``'s box, so it adds nothing once
    ``wide`` runs and goes last, though its own box is ten times ``fast``'s."""
    slow, wide, fast = _seed(0.001, 500, 0.90, 0), _seed(0.001, 450, 0.88, 1), _seed(1.0, 300, 0.30, 2)
    assert hv_order([slow, fast, wide], teacher_bytes=1000) == [wide, fast, slow]
    # Unmeasured seeds count with their prediction; a single seed is its own order.
    predicted = [_seed(0.001, 500, 0.90, 0, measured=False), _seed(0.001, 450, 0.88, 1, measured=False)]
    assert hv_order(predicted, 1000) == predicted[::-1]
    assert hv_order([slow], 1000) == [slow]


def test_seed_plans_come_back_in_hv_order() -> None:
    from tiny_models import tiny_cnn

    _, _, seed = _against_hand_picks()
    seeds = seed(8)
    assert len(seeds) >= 4 and seeds == hv_order(seeds, _record(tiny_cnn().eval())["teacher_bytes"])
    assert [s.level for s in seeds] != sorted(s.level for s in seeds)  # not the order the budgets picked them
