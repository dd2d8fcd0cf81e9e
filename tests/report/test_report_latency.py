"""How the report speaks about latency: from the stored ratio and spread, never faster inside the spread."""

from __future__ import annotations

import math

import optuna
import pytest
from report_synthetic import TEACHER

from autocomp.report.frame import latency_words, pareto_frame, ratio_text, teacher_point, trials_frame
from autocomp.report.html import render_page
from autocomp.report.recommend import recommend
from autocomp.study.records import set_system_attr


def _row(used, median=None, low=None, high=None) -> dict:
    return {"latency_ratio": used, "latency_ratio_measured": median, "latency_ratio_low": low,
            "latency_ratio_high": high}


@pytest.mark.parametrize(("row", "words"), [
    (_row(0.62, 0.62, 0.60, 0.64), "0.62x the teacher, faster (measured 0.62, spread 0.60-0.64)"),
    (_row(1.31, 1.31, 1.27, 1.35), "1.31x the teacher, slower (measured 1.31, spread 1.27-1.35)"),
    (_row(1.0, 0.98, 0.95, 1.01),
     "as fast as the teacher within the measured spread (measured 0.98, spread 0.95-1.01)"),
    (_row(0.5), "0.50x the teacher, faster"),  # a study from before the spread was stored
    (_row(math.nan), ""),
])
def test_latency_words(row: dict, words: str) -> None:
    assert latency_words(row) == words


def test_ratio_text_needs_all_three_numbers() -> None:
    assert ratio_text(_row(1.0, 0.98, 0.95, 1.01)) == "0.98 (0.95-1.01)"
    assert ratio_text(_row(1.0, 0.98, None, 1.01)) == ""


def _study_with_reference(reference: float) -> optuna.Study:
    """Two trials as the objective now stores them: values[2] = used ratio x the study's reference."""
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    study.set_user_attr("teacher_accuracy", TEACHER["accuracy"])
    study.set_user_attr("teacher_size_bytes", TEACHER["size_bytes"])
    study.set_user_attr("teacher_reference_ms", reference)
    set_system_attr(study, "teacher_reference", {"median_ms": reference, "q1_ms": reference * 0.98,
                                                 "q3_ms": reference * 1.02, "runs": 5000, "min_seconds": 2.0})
    for baseline, acc, size, used, measured in (("teacher", 98.0, 100_000, 1.0, (1.003, 0.99, 1.02)),
                                                ("", 98.0, 40_000, 1.0, (0.97, 0.95, 1.005)),
                                                ("", 97.5, 60_000, 0.7, (0.7, 0.68, 0.72))):
        metrics = {"latency_ms": measured[0] * 0.031, "teacher_latency_ms": 0.031, "latency_ratio": measured[0],
                   "latency_ratio_low": measured[1], "latency_ratio_high": measured[2]}
        study.add_trial(optuna.trial.create_trial(
            values=[acc, size, used * reference],
            user_attrs={"baseline": baseline, "metrics": metrics, "latency_ratio": used,
                        "teacher_reference_ms": reference, "plan": {"version": 1, "layers": {}}}))
    return study


def test_header_front_table_and_recommendation_agree_on_the_teacher_and_the_points() -> None:
    reference = 0.0242
    study = _study_with_reference(reference)
    frame = trials_frame(study)
    assert teacher_point(study, frame)["latency_ms"] == reference  # not a trial's own teacher timing (0.031)
    # The point whose spread contains 1 is as fast as the teacher: it dominates the teacher only by size.
    assert list(frame["pareto"]) == [False, True, True]
    table = pareto_frame(frame)
    assert list(table["latency x"]) == [1.0, 0.7]
    assert list(table["measured x (spread)"]) == ["0.97 (0.95-1.00)", "0.70 (0.68-0.72)"]
    page = render_page(study, frame)
    assert f"{reference:.4f} ms" in page and "median of 5000 runs" in page
    rec = recommend(frame, TEACHER["accuracy"], max_drop=1.0, prefer="latency")
    assert rec.trial == 2 and f"{0.7 * reference:.4f} ms, 0.70x the teacher, faster" in rec.reason
    rec = recommend(frame, TEACHER["accuracy"], max_drop=1.0, prefer="size")
    assert rec.trial == 1 and "as fast as the teacher within the measured spread" in rec.reason
