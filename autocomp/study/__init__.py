"""The search: the only package that talks to Optuna (space, costs, baselines, records, study,
objective, storage, runner, failures, pareto)."""
