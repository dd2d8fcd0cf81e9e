"""Which settings decide each objective: Optuna's parameter importances, one target per objective.

Uses ``optuna.importance.get_param_importances`` with a mean-decrease-impurity forest (fast:
about 0.1 s for 200 trials, where fANOVA took seconds) on the searched trials only: baseline
trials have no parameters. Size and latency are taken in log10, since they span orders of
magnitude. Never raises: too few trials or no parameters give a note instead of numbers.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import optuna

MIN_TRIALS = 8  # below this the forest mostly fits noise
OBJECTIVES = (("accuracy", lambda v: v), ("size", lambda v: math.log10(max(v, 1e-12))),
              ("latency", lambda v: math.log10(max(v, 1e-12))))


class ImportanceInfo(NamedTuple):
    params: list[str]  # the ``top`` parameters by their largest importance, most important first
    objectives: dict[str, list[float]]  # objective -> importance per parameter
    n_trials: int
    note: str  # non-empty when nothing could be computed, and says why


def importance_data(study: optuna.Study, top: int = 15) -> ImportanceInfo:
    """Each searched parameter's importance for each objective."""
    trials = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
              if t.params and t.values and all(math.isfinite(v) for v in t.values)]
    if len(trials) < MIN_TRIALS:
        return ImportanceInfo([], {}, len(trials),
                              f"{len(trials)} finished searched trials; importance needs at least {MIN_TRIALS}")
    common = set(trials[0].params).intersection(*(t.params for t in trials[1:]))
    params = [p for p in trials[0].params if p in common]  # keep the sampler's (model) order
    if not params:
        return ImportanceInfo([], {}, len(trials), "the searched trials share no parameter")
    # Sorted: optuna 5.0's MeanDecreaseImpurity evaluator labels importances in the order of
    # ``params`` but computes them in sorted order, so any other order mislabels them.
    names = sorted(params)
    scores: dict[str, dict[str, float]] = {}
    try:
        with warnings.catch_warnings():  # experimental / few-trial warnings are not the user's business
            warnings.simplefilter("ignore")
            for i, (name, transform) in enumerate(OBJECTIVES):
                evaluator = optuna.importance.MeanDecreaseImpurityImportanceEvaluator(n_trees=16, seed=0)
                scores[name] = optuna.importance.get_param_importances(
                    study, evaluator=evaluator, params=names, target=lambda t, i=i, f=transform: f(t.values[i]))
    except Exception as exc:  # importance is a nicety: a report must still be written
        return ImportanceInfo([], {}, len(trials), f"importance unavailable: {type(exc).__name__}: {exc}")
    ranked = sorted(params, key=lambda p: -max(s.get(p, 0.0) for s in scores.values()))[:top]
    return ImportanceInfo(ranked, {name: [float(s.get(p, 0.0)) for p in ranked] for name, s in scores.items()},
                          len(trials), "")
