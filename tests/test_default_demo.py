"""The default demo (``autocomp search`` with no arguments) on its own terms: what the front calls
faster is faster beyond the measured spread, and compression pays (issue 12's Done means).

A benchmark: a whole 50-trial search (2-5 minutes on 2 shared cores) with a speed target.
"""

from __future__ import annotations

import optuna
import pytest

from autocomp.api import run_search
from autocomp.config import SearchConfig
from autocomp.report.frame import trials_frame
from autocomp.report.html import render_page
from autocomp.report.recommend import recommend

pytestmark = pytest.mark.benchmark


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> optuna.Study:
    run = tmp_path_factory.mktemp("default")
    config = SearchConfig(run_dir=str(run), train_threads=1)  # every other setting as `autocomp search` has it
    return run_search(config, progress=False, log=lambda s: None)


def test_faster_means_below_one_by_more_than_the_spread(default_run: optuna.Study) -> None:
    frame = trials_frame(default_run)
    front = frame[frame["pareto"]]
    assert len(front) >= 3
    for _, row in front.iterrows():
        if row["latency_ratio"] < 1.0:
            assert row["latency_ratio_high"] < 1.0, row["trial"]
        if row["latency_ratio"] > 1.0:
            assert row["latency_ratio_low"] > 1.0, row["trial"]


def test_the_teacher_leaves_the_front_only_when_really_dominated(default_run: optuna.Study) -> None:
    frame = trials_frame(default_run)
    teacher = frame[frame["baseline"] == "teacher"].iloc[0]
    assert teacher["latency_ms"] == default_run.user_attrs["teacher_reference_ms"]
    if not teacher["pareto"]:
        done = frame[frame["state"] == "COMPLETE"]
        better = done[(done["accuracy"] >= teacher["accuracy"]) & (done["size_bytes"] <= teacher["size_bytes"])
                      & (done["latency_ratio"] <= 1.0)]
        assert not better.empty
        # ... and not one of them was let in by noise: none is faster than the teacher inside its spread.
        assert all(r["latency_ratio"] == 1.0 or r["latency_ratio_high"] < 1.0 for _, r in better.iterrows())


def test_header_and_recommendation_agree(default_run: optuna.Study) -> None:
    frame = trials_frame(default_run)
    reference = default_run.user_attrs["teacher_reference_ms"]
    page = render_page(default_run, frame)
    assert f"{reference:.4f} ms." in page  # "Teacher: ...% top-1, ... KB, <reference> ms."
    rec = recommend(frame, default_run.user_attrs["teacher_accuracy"], max_drop=1.0, prefer="latency")
    row = frame[frame["trial"] == rec.trial].iloc[0]
    assert f"{row['latency_ms']:.4f} ms" in rec.reason
    assert row["latency_ms"] == row["latency_ratio"] * reference


def test_compression_pays_on_the_default_demo(default_run: optuna.Study) -> None:
    """A Pareto point at most 0.9x the teacher's time (interleaved) within 1 point of its accuracy."""
    frame = trials_frame(default_run)
    teacher_acc = default_run.user_attrs["teacher_accuracy"]
    fast = frame[frame["pareto"] & (frame["latency_ratio"] <= 0.9) & (frame["accuracy"] >= teacher_acc - 1.0)]
    assert not fast.empty, frame.loc[frame["pareto"], ["trial", "accuracy", "latency_ratio", "baseline"]]
