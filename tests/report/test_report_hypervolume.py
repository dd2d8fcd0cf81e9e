"""The hypervolume's history: it never decreases and ends at the volume of every trial."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from autocomp.report.frame import teacher_point, trials_frame
from autocomp.report.hypervolume import hypervolume_history
from autocomp.study.hypervolume import hypervolume, reference_point, to_minimization


def test_history_is_monotone_and_ends_at_the_hypervolume_of_all_trials(make_study):
    study = make_study(n=40, seed=1)
    frame = trials_frame(study)
    ref = reference_point(teacher_point(study, frame))
    assert ref == (96.0, 100_000.0, 0.05)
    history = hypervolume_history(frame, ref)
    done = frame[frame["state"] == "COMPLETE"]
    assert history.trial == sorted(done["trial"])
    hv = history.hypervolume
    assert all(b >= a for a, b in zip(hv, hv[1:], strict=False))
    assert hv[-1] > 0
    scaled, unit = to_minimization(done[["accuracy", "size_bytes", "latency_ms"]].astype(float).to_numpy(), ref)
    assert hv[-1] == pytest.approx(hypervolume(scaled, unit), rel=1e-9)
    for prev, cur, up in zip([0.0, *hv], hv, history.improved, strict=False):
        assert up == (cur > prev + 1e-12)
    assert history.trial[:3] == [0, 1, 2] and history.hypervolume[0] == 0.0  # the teacher is the reference


def test_history_without_reference_or_trials_is_empty():
    frame = pd.DataFrame({"trial": [0], "state": ["FAIL"], "accuracy": [np.nan], "size_bytes": [None],
                          "latency_ms": [np.nan]})
    assert hypervolume_history(frame, None).trial == []
    assert hypervolume_history(frame, (96.0, 1e5, 0.05)).hypervolume == []
