"""Teacher sanity: chance level, warnings with their fix, and no early-stop floor at or below chance."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from autocomp.config import SearchConfig
from autocomp.pipeline.sanity import chance_accuracy, near_chance, teacher_warnings
from autocomp.plan import Plan
from autocomp.study.objective import Objective
from autocomp.study.space import parse_space


def test_chance_is_the_share_of_the_commonest_class() -> None:
    assert chance_accuracy(np.array([0, 1, 2, 3] * 25)) == 25.0
    assert chance_accuracy(np.array([1] * 30 + [0] * 10)) == 75.0
    assert chance_accuracy(np.array([], dtype=np.int64)) == 0.0


@pytest.mark.parametrize("accuracy,chance,near", [(8.6, 10.0, True), (19.0, 10.0, True), (20.0, 10.0, False),
                                                  (94.0, 90.0, True), (97.0, 90.0, False)])
def test_near_chance(accuracy: float, chance: float, near: bool) -> None:
    assert near_chance(accuracy, chance) is near


def test_warnings_name_the_problem_and_the_fix() -> None:
    assert teacher_warnings(98.0, 11.35, best_student=98.5) == []
    (low,) = teacher_warnings(8.6, 11.35)
    assert "8.6%" in low and "near chance (11.3%)" in low and "--teacher-epochs" in low and "BatchNorm" in low
    (beaten,) = teacher_warnings(60.0, 10.0, best_student=80.8)
    assert "beat the teacher by 20.8 points" in beaten and "--checkpoint" in beaten


def _objective(teacher_accuracy: float, labels: np.ndarray) -> Objective:
    space = parse_space("version: 1\nconstraints:\n  max_accuracy_drop: 5.0\n")
    bench = SimpleNamespace(teacher_accuracy=teacher_accuracy, chance_accuracy=chance_accuracy(labels))
    return Objective(bench, space, SearchConfig(), None)


def test_no_early_stop_floor_at_or_below_chance() -> None:
    labels = np.arange(100) % 10  # chance 10 %
    plan = Plan()
    assert _objective(8.6, labels)._early_stop(None, plan) is None  # floor -6.4 %: nothing to stop
    assert _objective(25.0, labels)._early_stop(None, plan) is None  # floor 10 % = chance
    assert callable(_objective(90.0, labels)._early_stop(None, plan))  # floor 75 %
