"""The hypervolume's history over a study's trials, for the report's "is the search still improving?".

The volume itself, its reference point (the teacher, 2 points less accurate) and its
normalization are ``autocomp.study.hypervolume``'s; a flat history means the search has stopped
finding deployable improvements.

Example::

    ref = autocomp.study.hypervolume.reference_point(teacher)  # {"accuracy", "size_bytes", "latency_ms"}
    history = hypervolume_history(trials_frame(study), ref)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pandas as pd

from autocomp.study.hypervolume import contribution, to_minimization
from autocomp.study.pareto import weakly_dominated


class HypervolumeHistory(NamedTuple):
    trial: list[int]
    hypervolume: list[float]  # normalized, after each finished trial
    improved: list[bool]  # the trial raised it
    reference: tuple[float, float, float] | None


def hypervolume_history(frame: pd.DataFrame, reference: tuple[float, float, float] | None) -> HypervolumeHistory:
    """Normalized hypervolume after each finished trial, in trial order.

    ``improved`` marks trials that raised it. Empty lists when there is no reference or no
    finished trial.
    """
    out = HypervolumeHistory([], [], [], reference)
    if reference is None or frame.empty or not all(math.isfinite(v) for v in reference):
        return out
    done = frame[(frame["state"] == "COMPLETE") & frame["accuracy"].notna()].sort_values("trial")
    if done.empty:
        return out
    raw = done[["accuracy", "size_bytes", "latency_ms"]].astype(float).to_numpy()
    scaled, ref = to_minimization(raw, reference)
    front = np.empty((0, 3))
    value = 0.0
    for number, point in zip(done["trial"].tolist(), scaled, strict=True):
        improved = False
        if np.all(np.isfinite(point)) and np.all(point < ref) and not weakly_dominated(point, front):
            gain = contribution(point, front, ref)
            front = np.vstack([front[~np.all(point <= front, axis=1)], point])
            improved = gain > 1e-12
            value += gain
        out.trial.append(int(number))
        out.hypervolume.append(value)
        out.improved.append(improved)
    return out
