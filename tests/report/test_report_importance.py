"""Parameter importance: right ranking when there is signal, a note (never an exception) when not."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import FloatDistribution

from autocomp.report.importance import MIN_TRIALS, importance_data


def test_sparsity_decides_accuracy_in_the_synthetic_study(make_study):
    data = importance_data(make_study(n=60, seed=2))
    assert data.note == "" and data.n_trials > MIN_TRIALS
    assert set(data.objectives) == {"accuracy", "size", "latency"}
    acc = dict(zip(data.params, data.objectives["accuracy"], strict=True))
    top_for_accuracy = max(acc, key=acc.get)
    assert top_for_accuracy.endswith((".sparsity", ".bits"))  # what the synthetic accuracy depends on
    lat = dict(zip(data.params, data.objectives["latency"], strict=True))
    assert max(lat, key=lat.get).endswith((".rank", ".channel_ratio"))
    for values in data.objectives.values():
        assert all(v >= 0 for v in values) and sum(values) <= 1 + 1e-9


def test_few_trials_give_a_note(make_study):
    data = importance_data(make_study(n=4))
    assert data.params == [] and "needs at least" in data.note


def test_baselines_only_give_a_note(make_study):
    data = importance_data(make_study(n=0))
    assert data.params == [] and data.n_trials == 0 and data.note


def test_trials_sharing_no_parameter_give_a_note():
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    for i in range(MIN_TRIALS + 2):
        name = f"p{i}"
        study.add_trial(optuna.trial.create_trial(values=[90.0 + i, 1000.0 - i, 1.0], params={name: 0.5},
                                                  distributions={name: FloatDistribution(0, 1)}))
    assert importance_data(study).note == "the searched trials share no parameter"


def test_an_evaluator_failure_becomes_a_note(make_study, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(optuna.importance, "get_param_importances", broken)
    data = importance_data(make_study(n=20))
    assert data.params == [] and data.note == "importance unavailable: RuntimeError: boom"


@pytest.mark.parametrize("top", [1, 5])
def test_top_limits_the_parameters(make_study, top):
    assert len(importance_data(make_study(n=30), top=top).params) == top
