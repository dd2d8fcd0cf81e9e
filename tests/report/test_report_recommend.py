"""The recommendation picks what a plain loop over the stored trials picks, and says how to export it."""

from __future__ import annotations

import random
import shlex

import optuna
import pytest

from autocomp.errors import AutocompError
from autocomp.report.frame import trials_frame
from autocomp.report.recommend import recommend, recommend_text

TEACHER_ACC = 98.0


def brute_force(trials: list[optuna.trial.FrozenTrial], max_drop: float, max_size: float | None,
                max_latency: float | None, prefer: str) -> int | None:
    """Straight from the storage: filter finished trials by the limits, take the best by the rule."""
    keys = {
        "size": lambda t: (t.values[1], t.values[2], -t.values[0], t.number),
        "latency": lambda t: (t.values[2], t.values[1], -t.values[0], t.number),
        "accuracy": lambda t: (-t.values[0], t.values[1], t.values[2], t.number),
    }
    ok = [t for t in trials
          if t.state == optuna.trial.TrialState.COMPLETE
          and TEACHER_ACC - t.values[0] <= max_drop
          and (max_size is None or t.values[1] <= max_size)
          and (max_latency is None or t.values[2] <= max_latency)]
    return min(ok, key=keys[prefer]).number if ok else None


@pytest.mark.parametrize("prefer", ["size", "latency", "accuracy"])
def test_recommendation_equals_brute_force_filter(make_study, prefer):
    study = make_study(n=80, seed=5)
    frame = trials_frame(study)
    rng = random.Random(prefer)
    cases = [(1.0, None, None), (0.0, None, None), (3.0, 20_000, None), (5.0, None, 0.04), (0.05, 1000, 0.01)]
    cases += [(rng.uniform(0, 8), rng.choice([None, rng.randint(2_000, 60_000)]),
               rng.choice([None, rng.uniform(0.025, 0.05)])) for _ in range(40)]
    found = 0
    trials = study.get_trials(deepcopy=False)
    for max_drop, max_size, max_latency in cases:
        expected = brute_force(trials, max_drop, max_size, max_latency, prefer)
        rec = recommend(frame, TEACHER_ACC, max_drop, max_size, max_latency, prefer)
        assert rec.trial == expected, (max_drop, max_size, max_latency)
        found += expected is not None
        if rec.trial is not None:
            assert frame.set_index("trial").loc[rec.trial, "pareto"]  # always on the front
    assert 10 < found < len(cases)  # the cases exercise both outcomes


def test_ties_go_to_lower_latency_then_higher_accuracy_then_earlier_trial():
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    for values in ([97.5, 1000.0, 0.02], [97.5, 1000.0, 0.01], [97.8, 1000.0, 0.01], [97.8, 1000.0, 0.01]):
        study.add_trial(optuna.trial.create_trial(values=values))
    assert recommend(trials_frame(study), TEACHER_ACC).trial == 2


def test_reason_explains_the_choice_and_what_was_ruled_out(make_study):
    study = make_study(n=40, seed=5)
    frame = trials_frame(study)
    rec = recommend(frame, TEACHER_ACC, max_drop=1.0)
    row = frame.set_index("trial").loc[rec.trial]
    assert f"trial {rec.trial} is the smallest artifact" in rec.reason
    assert f"{int(row['size_bytes']):,} bytes" in rec.reason and f"{row['accuracy']:.2f}%" in rec.reason
    assert "ruled out" in rec.reason and "points > 1" in rec.reason  # smaller trials lost on accuracy
    assert f"{len(rec.candidates)} of " in rec.reason
    assert rec.trial in rec.candidates


def test_text_prints_the_exact_export_command(make_study):
    study = make_study(n=20)
    text = recommend_text(study, "sqlite:///runs/my run/study.db", max_drop=1.0)
    rec = recommend(trials_frame(study), TEACHER_ACC, 1.0)
    command = text.splitlines()[-1].strip()
    assert shlex.split(command) == ["autocomp", "export", "--storage", "sqlite:///runs/my run/study.db",
                                    "--study-name", "synthetic", "--trial", str(rec.trial),
                                    "--out", f"trial_{rec.trial}.acz"]


def test_nothing_meets_the_limits(make_study):
    study = make_study(n=10)
    rec = recommend(trials_frame(study), TEACHER_ACC, max_drop=0.5, max_size=10)
    assert rec.trial is None and "no finished trial meets the limits" in rec.reason and "bytes > 10" in rec.reason
    assert recommend_text(study, "sqlite:///x.db", max_size=10).startswith("recommendation: none")
    empty = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    assert recommend(trials_frame(empty), TEACHER_ACC).trial is None
    assert "no teacher accuracy" in recommend_text(empty, "sqlite:///x.db")


def test_unknown_preference_is_a_user_error(make_study):
    with pytest.raises(AutocompError, match="prefer"):
        recommend(trials_frame(make_study(n=3)), TEACHER_ACC, prefer="cheapest")
