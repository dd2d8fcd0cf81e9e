"""Pareto dominance, written once: the study, the trials table, the plots, the hypervolume and
the benchmark all ask here.

Points are rows of numbers to minimize (``to_minimize`` turns autocomp's objectives, accuracy
up and size and latency down, into that form). ``a`` dominates ``b`` when it is no worse in
every column and better in one.

Example::

    pts = to_minimize([[98.9, 10_000, 0.02], [98.0, 12_000, 0.03]])
    nondominated_mask(pts)   # array([ True, False])
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np
import optuna

from autocomp.study.records import constraint_values, trial_promoted_from

# autocomp's objectives, in the order trials store them, and whether each is maximized.
OBJECTIVES = ("accuracy", "size_bytes", "latency_ms")
MAXIMIZE = (True, False, False)


def to_minimize(values: Sequence[Sequence[float]] | np.ndarray, maximize: Sequence[bool] = MAXIMIZE) -> np.ndarray:
    """Rows of objective values -> rows to minimize (maximized columns negated)."""
    pts = np.asarray(values, dtype=float).reshape(-1, len(maximize))
    return pts * np.where(maximize, -1.0, 1.0)


def nondominated_mask(points: np.ndarray) -> np.ndarray:
    """``mask[i]`` is True when no row dominates row ``i`` (equal rows do not dominate each other)."""
    pts = np.asarray(points, dtype=float)
    if len(pts) == 0:
        return np.zeros(0, dtype=bool)
    le = np.all(pts[:, None, :] <= pts[None, :, :], axis=2)  # le[i, j]: i is no worse than j everywhere
    lt = np.any(pts[:, None, :] < pts[None, :, :], axis=2)  # lt[i, j]: i is better than j somewhere
    return ~(le & lt).any(axis=0)


def dominated_by(point: np.ndarray, others: np.ndarray, tie: Sequence[float] | None = None) -> bool:
    """True when some row of ``others`` dominates ``point``. ``tie``: per column, a relative
    difference too small to count (a measurement's noise floor): within ``|point| * tie`` a row is
    as good as ``point`` there, and it must beat ``point`` by more than that to be better.

    Example::

        dominated_by([-98.7, 100, 0.69], [[-98.72, 90, 0.70]])                   # False: slower
        dominated_by([-98.7, 100, 0.69], [[-98.72, 90, 0.70]], tie=(0, 0, 0.03))  # True
    """
    others, p = np.asarray(others, dtype=float), np.asarray(point, dtype=float)
    band = np.abs(p) * np.asarray(tie, dtype=float) if tie is not None else np.zeros_like(p)
    no_worse, better = others <= p + band, others < p - band
    return bool(len(others)) and bool(np.any(np.all(no_worse, axis=1) & np.any(better, axis=1)))


def weakly_dominated(point: np.ndarray, others: np.ndarray) -> bool:
    """True when some row of ``others`` is no worse than ``point`` in every column."""
    others = np.asarray(others, dtype=float)
    return bool(len(others)) and bool(np.any(np.all(others <= np.asarray(point, dtype=float), axis=1)))


def unique_front(points: np.ndarray) -> np.ndarray:
    """The rows no other row weakly dominates, each kept once."""
    pts = np.unique(np.asarray(points, dtype=float), axis=0)
    return pts[nondominated_mask(pts)] if len(pts) > 1 else pts


def staircase(x: Sequence[float], y: Sequence[float]) -> list[int]:
    """Indices of the 2-D front (lower ``x``, higher ``y``) in increasing ``x``; ties kept once."""
    order = sorted(range(len(x)), key=lambda i: (x[i], -y[i]))
    best, keep = -math.inf, []
    for i in order:
        if y[i] > best:
            keep.append(i)
            best = y[i]
    return keep


def is_feasible(trial: optuna.trial.FrozenTrial) -> bool:
    """Every constraint value <= 0 (Optuna's rule), in Optuna 4's and 5's formats (``records.constraint_values``)."""
    return all(v <= 0 for v in constraint_values(trial))


def _standing(trial: optuna.trial.FrozenTrial) -> bool:
    """COMPLETE, feasible, with finite values for every objective: a point the front can hold."""
    return (trial.state == optuna.trial.TrialState.COMPLETE and bool(trial.values)
            and len(trial.values) == len(OBJECTIVES) and all(math.isfinite(v) for v in trial.values)
            and is_feasible(trial))


class Member(NamedTuple):
    """A finished trial as ``left_out`` weighs it: its number, the trial it promoted (None for
    an original), whether it can stand on the front, and its accuracy (-inf when not finite)."""

    number: int
    promoted_from: int | None
    stands: bool
    accuracy: float


def left_out(members: Iterable[Member]) -> set[int]:
    """Numbers that another member of the same Plan stands for: of a trial and its promotions,
    the one that can stand (feasible, finite values) and is the most accurate, a promotion on a
    tie; every other member of that Plan is left out."""
    groups: dict[int, list[Member]] = {}
    for m in members:
        groups.setdefault(m.number if m.promoted_from is None else m.promoted_from, []).append(m)
    out = set()
    for plan in groups.values():
        if len(plan) > 1:
            best = max(plan, key=lambda m: (m.stands, m.accuracy, m.promoted_from is not None, m.number))
            out |= {m.number for m in plan if m is not best}
    return out


def superseded(trials: Sequence[optuna.trial.FrozenTrial]) -> set[int]:
    """Numbers of the COMPLETE trials another trial of the same Plan stands for (``front_trials``):
    of a trial and its COMPLETE promotion (its Plan re-run with a longer fine-tune), the more
    accurate (``left_out``). Both are files the study measured and ``autocomp export`` gives back;
    a longer fine-tune that ended lower (13 of 310 promotions in issue 21's benchmarks, by
    0.01-0.09 point) must not take the better file off the front. A promotion still running, or
    failed, or stopped early leaves its original standing.
    """
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    numbers = {t.number for t in done}
    return left_out(Member(t.number, n if (n := trial_promoted_from(t)) in numbers else None, _standing(t),
                           t.values[0] if t.values and math.isfinite(t.values[0]) else -math.inf) for t in done)


def front_trials(trials: Sequence[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """Complete, feasible trials with finite values that no other such trial dominates (what
    ``study.best_trials`` returns, without its deep copies and NaN points), one per promoted Plan.

    Of a trial and its COMPLETE promotion (the same Plan re-run with a longer fine-tune, marked
    ``promoted_from``: ``autocomp.study.promotion``), the more accurate stands for the Plan, the
    promotion on a tie (``superseded``), with its own measured accuracy, size and latency, the
    ones an export of it gives; the other keeps its values in the study. While the promotion
    runs, or when it failed or was stopped early, the original stands. The report, the trials
    table, export and the console all ask here, so they show one front.
    """
    left_out = superseded(trials)
    done = [t for t in trials if _standing(t) and t.number not in left_out]
    if not done:
        return []
    mask = nondominated_mask(to_minimize([t.values for t in done]))
    return [t for t, keep in zip(done, mask, strict=True) if keep]
