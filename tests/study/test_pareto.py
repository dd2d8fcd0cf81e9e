"""Pareto dominance, tested once: against brute force and against Optuna's own ``best_trials``."""

from __future__ import annotations

import itertools
import random

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from autocomp.study.pareto import (
    dominated_by,
    front_trials,
    nondominated_mask,
    staircase,
    to_minimize,
    unique_front,
    weakly_dominated,
)


def _dominates(a, b) -> bool:  # noqa: ANN001
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("seed", range(5))
def test_mask_matches_brute_force_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pts = rng.integers(0, 4, size=(40, 3)).astype(float)  # many ties and duplicates on purpose
    mask = nondominated_mask(pts)
    for i, p in enumerate(pts):
        assert mask[i] == (not any(_dominates(q, p) for q in pts)), i
        assert dominated_by(p, pts) == (not mask[i])
    assert nondominated_mask(np.empty((0, 3))).shape == (0,)


def test_to_minimize_negates_accuracy_only() -> None:
    assert to_minimize([[98.0, 10.0, 0.5]]).tolist() == [[-98.0, 10.0, 0.5]]
    pts = to_minimize([[98.9, 10_000, 0.02], [98.0, 12_000, 0.03], [99.0, 50_000, 0.05]])
    assert nondominated_mask(pts).tolist() == [True, False, True]


def test_unique_front_keeps_each_point_once_and_weak_dominance_counts_equals() -> None:
    pts = np.array([[1, 1, 1], [1, 1, 1], [2, 2, 2], [0, 3, 1]], dtype=float)
    assert sorted(map(tuple, unique_front(pts))) == [(0.0, 3.0, 1.0), (1.0, 1.0, 1.0)]
    assert weakly_dominated(np.array([1.0, 1.0, 1.0]), pts[:1])  # an equal point
    assert not dominated_by(np.array([1.0, 1.0, 1.0]), pts[:1])
    assert not weakly_dominated(np.array([0.5, 0.5, 5.0]), pts)


def test_a_difference_inside_the_tie_band_is_no_better_and_no_worse() -> None:
    point = to_minimize([[98.69, 192_343, 0.680]])[0]  # uniform int4 on LeNet-5
    closer = to_minimize([[98.72, 104_000, 0.686]])  # more accurate, smaller, 0.9 % slower
    tie = (0.0, 0.0, 0.03)
    assert not dominated_by(point, closer) and dominated_by(point, closer, tie=tie)
    slower = to_minimize([[98.72, 104_000, 0.710]])  # 4.4 % slower: outside the band
    assert not dominated_by(point, slower, tie=tie)
    # Equal accuracy and bytes, 2 % faster: inside the band, so not better anywhere.
    assert not dominated_by(point, to_minimize([[98.69, 192_343, 0.666]]), tie=tie)
    assert dominated_by(point, to_minimize([[98.69, 192_343, 0.650]]), tie=tie)  # 4.4 % faster
    assert dominated_by(point, to_minimize([[98.69, 192_343, 0.666]]))  # every difference counts


@pytest.mark.parametrize("seed", range(5))
def test_staircase_matches_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    x = [rng.choice([1.0, 2.0, 3.0, rng.random() * 5]) for _ in range(40)]  # ties on purpose
    y = [rng.choice([90.0, 95.0, rng.random() * 100]) for _ in range(40)]
    got = staircase(x, y)
    brute = [i for i in range(len(x))
             if not any(x[j] <= x[i] and y[j] >= y[i] and (x[j], y[j]) != (x[i], y[i]) for j in range(len(x)))]
    assert [x[i] for i in got] == sorted(x[i] for i in got)  # drawn left to right
    assert {(x[i], y[i]) for i in got} == {(x[i], y[i]) for i in brute}  # one per distinct front point
    assert all(y[a] < y[b] for a, b in itertools.pairwise(got))  # a staircase: more size buys accuracy


@pytest.mark.parametrize("seed", range(3))
def test_front_trials_equal_optunas_best_trials(seed: int) -> None:
    rng = random.Random(seed)
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    dist = {"x": FloatDistribution(0, 1)}
    for i in range(60):
        values = [rng.choice([90.0, 95.0, 98.0]), rng.choice([1e4, 2e4, 5e4]), rng.choice([0.01, 0.02])]
        state = TrialState.COMPLETE if i % 7 else TrialState.FAIL
        attrs = {"constraints": [rng.choice([-1.0, 0.0, 0.5])]}
        study.add_trial(create_trial(state=state, values=values if state == TrialState.COMPLETE else None,
                                     params={"x": 0.5}, distributions=dist, system_attrs=attrs))
    ours = {t.number for t in front_trials(study.trials)}
    assert ours == {t.number for t in study.best_trials}
    assert ours and all(t.system_attrs["constraints"][0] <= 0 for t in study.trials if t.number in ours)


def test_front_trials_skip_non_finite_values() -> None:
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    study.add_trial(create_trial(values=[99.0, float("inf"), 1.0]))
    study.add_trial(create_trial(values=[90.0, 10.0, 1.0]))
    assert [t.number for t in front_trials(study.trials)] == [1]


@pytest.mark.parametrize("seed", range(3))
def test_a_complete_promotion_replaces_its_original_on_the_front(seed: int) -> None:
    from autocomp.study.records import promotion_marks

    rng = random.Random(seed)
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    dist = {"x": FloatDistribution(0, 1)}
    for i in range(40):
        values = [rng.choice([90.0, 95.0, 98.0]), rng.choice([1e4, 2e4, 5e4]), rng.choice([0.01, 0.02])]
        promoted = rng.randrange(i) if i > 20 else None  # promotions of earlier trials, some of them repeated
        state = TrialState.FAIL if i % 9 == 0 else TrialState.COMPLETE
        study.add_trial(create_trial(state=state, values=values if state == TrialState.COMPLETE else None,
                                     params={"x": 0.5}, distributions=dist, system_attrs={"constraints": [-1.0]},
                                     user_attrs=promotion_marks(promoted) if promoted is not None else {}))
    replaced = {t.user_attrs["promoted_from"] for t in study.trials
                if t.state == TrialState.COMPLETE and "promoted_from" in t.user_attrs}
    assert replaced
    rest = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    for t in study.trials:
        if t.number not in replaced:
            rest.add_trial(t)
    # Optuna's own front of the study without the replaced originals (numbers mapped back).
    kept = [t.number for t in study.trials if t.number not in replaced]
    assert {t.number for t in front_trials(study.trials)} == {kept[t.number] for t in rest.best_trials}
