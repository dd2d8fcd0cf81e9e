"""The default demo (``autocomp search`` with no arguments) on its own terms: what the front calls
faster is faster beyond the measured spread, compression pays, and the front keeps the hand-made
fast point (issue 12's Done means, made independent of the CPU: see the last test).

A benchmark: a whole 50-trial search (2-5 minutes on 2 shared cores).
"""

from __future__ import annotations

import platform

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


def _where(frame, rows) -> str:  # noqa: ANN001
    """What a failure prints: the machine (a speed-up is a CPU's, not the code's) and the rows."""
    cols = ["trial", "baseline", "promoted_from", "accuracy", "size_ratio", "latency_ratio", "latency_ratio_low",
            "latency_ratio_high"]
    return f"{platform.machine()} {platform.processor()!r}\n{frame.loc[rows, cols].to_string()}"


def test_compression_pays_on_the_default_demo(default_run: optuna.Study) -> None:
    """A front point within 1 point of the teacher at a quarter of its bytes or less, and not slower."""
    frame = trials_frame(default_run)
    teacher_acc = default_run.user_attrs["teacher_accuracy"]
    pays = frame["pareto"] & (frame["accuracy"] >= teacher_acc - 1.0) & (frame["size_ratio"] <= 0.25) & (
        frame["latency_ratio"] <= 1.0)
    assert pays.any(), _where(frame, frame["pareto"])


def test_the_front_is_as_fast_as_the_hand_made_channel_cut(default_run: optuna.Study) -> None:
    """The front holds a point as accurate as the ``channels50`` baseline (or within 1 point of the
    teacher) and not measurably slower than it: neither the search nor a promotion standing for it
    loses the fast point a user makes by hand. How much faster than the teacher that point is, is
    the CPU's (0.84x on this project's Xeon; in CI's run of 2026-12-05 no point of the demo was
    measurably faster than the teacher), so that figure is a benchmark's (experiments/benchmark.py
    --config experiments/default.yaml), not a test's."""
    frame = trials_frame(default_run)
    teacher_acc = default_run.user_attrs["teacher_accuracy"]
    hand = frame[frame["baseline"] == "channels50"].iloc[0]
    fast = frame["pareto"] & (frame["accuracy"] >= min(hand["accuracy"], teacher_acc - 1.0)) & (
        frame["latency_ratio"] <= hand["latency_ratio_high"])
    assert fast.any(), _where(frame, frame["pareto"] | (frame["baseline"] == "channels50"))


def test_the_recommendation_is_smaller_than_the_teacher_and_not_slower(default_run: optuna.Study) -> None:
    """Issue 21's demo goal, with the defaults `autocomp search` prints its recommendation with."""
    frame = trials_frame(default_run)
    rec = recommend(frame, default_run.user_attrs["teacher_accuracy"], max_drop=1.0)
    row = frame[frame["trial"] == rec.trial].iloc[0]
    assert row["size_ratio"] < 0.5 and row["latency_ratio"] <= 1.0, _where(frame, frame["trial"] == rec.trial)
    assert row["pareto"]  # a promoted trial stands for its original, as on the front
