"""The study's sampler, chosen by ``--sampler`` and sized to the trial budget."""

from __future__ import annotations

import warnings

import optuna


def make_sampler(name: str, seed: int, n_trials: int) -> optuna.samplers.BaseSampler:
    """Samplers read each trial's constraints (``records.write_constraints``) to prefer feasible points.

    Example::

        sampler = make_sampler("tpe", seed=0, n_trials=50)
    """
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        # NSGA-II samples at random for its whole first generation: size it to the budget.
        population = max(4, min(50, n_trials // 4))
        return optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # `group` and `constant_liar` are marked experimental
        # constant_liar: Optuna's advice for parallel workers. Trials still running count as
        # the worst outcome, so workers sampling at once are steered away from each other's
        # plans (in one process no other trial is running when a plan is sampled: no change).
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(4, min(10, n_trials // 3)),
                                          multivariate=True, group=True, constant_liar=True)
