"""Promotion of the Pareto front (the same Plan, a longer fine-tune) and the schedule that fits
the search and the promotions into --timeout."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import torch
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from autocomp.plan import DistillPlan, LayerPlan, Plan
from autocomp.study import records
from autocomp.study.pareto import front_trials, superseded
from autocomp.study.promotion import (
    LONG_FINETUNE,
    LONG_KD,
    Schedule,
    enqueue_promotion,
    enqueue_promotions,
    promotable,
    promoted_or_queued,
    promoted_plan,
    split_trials,
    spread_order,
)
from autocomp.study.space_model import Domain

DIST = {"x": FloatDistribution(0, 1)}


def _plan(steps: int = 2) -> dict:
    return Plan(distill=DistillPlan(steps=steps)).to_dict()


def _add(study: optuna.Study, values: tuple[float, float, float] | None, *, x: float, state=TrialState.COMPLETE,
         steps: int = 2, seconds: dict | None = None, feasible: bool = True, **attrs) -> int:
    user = {records.PLAN: _plan(steps), records.SECONDS: seconds or {"total": 10.0, "finetune": 8.0}, **attrs}
    study.add_trial(create_trial(state=state, values=list(values) if values else None, params={"x": x},
                                 distributions=DIST, user_attrs=user,
                                 system_attrs={"constraints": [-1.0 if feasible else 1.0]}))
    return len(study.trials) - 1


def _study() -> optuna.Study:
    """A teacher baseline, three front points, one dominated point, one infeasible point."""
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    _add(study, (99.0, 4000, 1.0), x=0.0, steps=0, baseline="teacher")  # 0: the teacher, nothing to fine-tune
    _add(study, (98.5, 2000, 0.8), x=0.1)  # 1
    _add(study, (97.0, 500, 0.5), x=0.2)  # 2
    _add(study, (98.0, 1000, 0.6), x=0.3)  # 3
    _add(study, (96.0, 2500, 0.9), x=0.4)  # 4: dominated by 1
    _add(study, (99.5, 100, 0.1), x=0.5, feasible=False)  # 5: would dominate all, infeasible
    return study


# -- the split -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n, share, expect", [(50, 0.2, (40, 10)), (10, 0.2, (8, 2)), (5, 0.1, (4, 1)),
                                              (5, 0.05, (5, 0)), (4, 0.5, (4, 0)), (12, 0.0, (12, 0)),
                                              (7, 0.5, (3, 4)), (6, 1.0, (0, 6)), (0, 0.2, (0, 0))])
def test_n_trials_split_into_search_and_promotion(n: int, share: float, expect: tuple[int, int]) -> None:
    assert split_trials(n, share) == expect
    assert sum(split_trials(n, share)) == n


def test_a_long_promotion_ramps_a_pruned_plans_sparsity_and_a_short_one_does_not() -> None:
    plan = Plan(layers={"fc": LayerPlan(sparsity=0.9, bits=4)}, distill=DistillPlan(steps=150, temperature=2.0))
    short = promoted_plan(plan, 4)  # 600 steps: one-shot masks, as the plan's own fine-tune
    assert short.distill == DistillPlan(steps=600, temperature=2.0) and short.layers == plan.layers
    long = promoted_plan(plan, 16)  # 2,400 steps: the ramp over its first 60 %
    assert long.distill == DistillPlan(steps=2400, temperature=2.0, sparsity_ramp=0.6) and long.layers == plan.layers
    assert promoted_plan(plan.with_distill(sparsity_ramp=0.3), 64).distill.sparsity_ramp == 0.3  # its own ramp stays


def test_a_long_promotion_distils_with_the_long_kd_settings_where_the_space_searches_them() -> None:
    plan = Plan(layers={"fc": LayerPlan(sparsity=0.9)}, distill=DistillPlan(steps=150, temperature=5.0, alpha=0.4))
    long = DistillPlan(steps=9600, temperature=5.0, alpha=0.4, sparsity_ramp=0.6)
    both = {"temperature": Domain(low=1.0, high=8.0), "alpha": Domain(choices=(0.4, 0.9))}
    assert promoted_plan(plan, 4, both).distill == DistillPlan(steps=600, temperature=5.0, alpha=0.4)  # as searched
    assert promoted_plan(plan, 64, both).distill == replace(long, temperature=2.0, alpha=0.9)
    # A setting the space fixes, or whose range leaves LONG_KD's value out, is the user's.
    assert promoted_plan(plan, 64, {**both, "temperature": Domain(fixed=5.0)}).distill == replace(long, alpha=0.9)
    bounded = {**both, "alpha": Domain(low=0.2, high=0.6)}
    assert promoted_plan(plan, 64, bounded).distill == replace(long, temperature=2.0)
    assert promoted_plan(plan, 64).distill == long


def test_promotion_trials_the_front_cannot_use_search_instead() -> None:
    study = _study()  # three points to promote
    schedule = Schedule.start(25, 0.2, 4, None)
    assert (schedule.n_search, schedule.n_promote) == (20, 5)
    assert schedule.give_back(study.trials) == 2 and (schedule.n_search, schedule.n_promote) == (22, 3)
    # Plans still queued (seeds a short run did not reach): Optuna would run them before any promotion.
    study.enqueue_trial({"x": 0.9}, user_attrs=records.seed_marks("size", 1, 1000.0, {}))
    schedule = Schedule.start(25, 0.2, 4, None)
    assert schedule.give_back(study.trials) == 5 and (schedule.n_search, schedule.n_promote) == (25, 0)
    # Under a timeout they wait for the promotions instead (runner._promote defers them).
    schedule = Schedule.start(25, 0.2, 4, 600.0)
    assert schedule.give_back(study.trials) == 2 and (schedule.n_search, schedule.n_promote) == (22, 3)


def test_under_a_timeout_seeds_still_queued_wait_for_the_promotions_and_are_queued_again() -> None:
    from autocomp.study.runner import _promote

    study = _study()
    study.enqueue_trial({"x": 0.6}, user_attrs=records.baseline_marks("int8", None))
    study.enqueue_trial({"x": 0.7}, user_attrs=records.seed_marks("size", 1, 1000.0, {"kl": 0.1}))
    schedule = Schedule.start(10, 0.2, 4, 600.0)  # 8 search trials (all done), 2 promotions
    ran, logs = [], []

    def objective(trial: optuna.Trial) -> tuple[float, float, float]:
        ran.append((trial.number, trial.user_attrs.get(records.PROMOTED_FROM), trial.suggest_float("x", 0, 1)))
        return 99.0, 400.0, 0.4

    _promote(study, objective, schedule, [], None, logs.append)
    # Optuna would have run the two queued plans ahead of either promotion and left no time for them.
    assert [(of, x) for _, of, x in ran] == [(1, 0.1), (2, 0.2)], ran
    deferred = [t for t in study.trials if t.state == TrialState.FAIL]
    assert [records.trial_failure(t) for t in deferred] == [records.DEFERRED] * 2
    again = study.get_trials(states=(TrialState.WAITING,))
    assert [(t.system_attrs["fixed_params"], t.user_attrs) for t in again] == [
        ({"x": 0.6}, records.baseline_marks("int8", None)),
        ({"x": 0.7}, records.seed_marks("size", 1, 1000.0, {"kl": 0.1}))]
    assert all(t.number > ran[-1][0] for t in again)  # behind the promotions: the next run runs them
    assert records.is_interruption(records.DEFERRED)  # not a failure of the plan: the report and resume
    assert any("2 queued plans" in line and "queued again" in line for line in logs), logs


# -- which trials, in which order ------------------------------------------------------------------------
def test_the_feasible_front_is_promoted_without_the_teacher_most_accurate_first() -> None:
    study = _study()
    order = [t.number for t in promotable(study.trials)]
    assert {t.number for t in front_trials(study.trials)} == {0, 1, 2, 3}
    assert order[0] == 1 and sorted(order) == [1, 2, 3]  # not 0 (steps 0), 4 (dominated), 5 (infeasible)
    assert order == [1, 2, 3]  # then the far end of the front (the smallest), then the middle


def _teacher_study() -> optuna.Study:
    """A front under a teacher at 99 %, 4000 B, 1 ms (the hypervolume's reference: 97 %)."""
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    _add(study, (98.9, 2000, 0.8), x=0.1)  # 0: the most accurate
    _add(study, (96.0, 500, 0.3), x=0.2)  # 1: under the reference; predicted 97.5 %: adds 0.052
    _add(study, (96.1, 510, 0.31), x=0.3)  # 2: 1's near twin, predicted 97.55 %: adds 0.055, then 1 adds 0.002
    _add(study, (98.0, 1000, 0.6), x=0.4)  # 3: predicted 98.5 %: adds 0.033
    _add(study, (90.0, 100, 0.1), x=0.5)  # 4: 9 points down; predicted 94.5 %, still under the reference
    study.set_user_attr(records.TEACHER_ACCURACY, 99.0)
    study.set_user_attr(records.TEACHER_SIZE_BYTES, 4000)
    study.set_user_attr(records.TEACHER_REFERENCE_MS, 1.0)
    return study


def test_promotions_go_where_the_predicted_promotion_adds_most_hypervolume() -> None:
    study = _teacher_study()
    teacher = records.read_study(study).teacher
    # Greedy: once 2 is promoted, its twin 1 adds almost nothing, so 3 comes before it; 4 adds
    # nothing at all and comes last.
    assert [t.number for t in promotable(study.trials, teacher)] == [0, 2, 3, 1, 4]
    assert [t.number for t in promotable(study.trials, teacher, limit=2)] == [0, 2]
    # Without the teacher's numbers: the spread order, whose second pick is the far end.
    assert [t.number for t in promotable(study.trials)] == [t.number for t in spread_order(front_trials(study.trials))]
    assert [t.number for t in promotable(study.trials)][:2] == [0, 4]


def test_the_first_promotion_is_the_most_accurate_point_smaller_and_faster_than_the_teacher() -> None:
    """A baseline more accurate than every compressed point but at the teacher's latency (the
    224-px night's prune50) adds nothing to the volume: it is not promoted first."""
    study = _teacher_study()
    outside = _add(study, (99.4, 2000, 1.0), x=0.6)
    teacher = records.read_study(study).teacher
    order = [t.number for t in promotable(study.trials, teacher)]
    assert order[0] == 0 and order.index(outside) > order.index(3)
    # With no point inside the teacher's bytes and time, the most accurate comes first still.
    lone = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    _add(lone, (99.4, 2000, 1.0), x=0.6)
    _add(lone, (98.0, 1500, 1.2), x=0.7)  # smaller, slower: on the front, outside too
    for key, value in ((records.TEACHER_ACCURACY, 99.0), (records.TEACHER_SIZE_BYTES, 4000),
                       (records.TEACHER_REFERENCE_MS, 1.0)):
        lone.set_user_attr(key, value)
    assert promotable(lone.trials, records.read_study(lone).teacher)[0].number == 0


def test_queued_promotions_count_as_promoted_and_the_study_gives_the_teacher() -> None:
    study = _teacher_study()
    enqueue_promotion(study, study.trials[2])  # another worker queued 2's promotion
    # 2 counts as promoted: its twin 1 adds almost nothing and waits behind 3 (were 2 left at
    # 96.1 %, 1 would come second; without the study's teacher, 4 would).
    assert enqueue_promotions(study, 5) == [0, 3, 1, 4]


def test_a_point_back_on_the_front_after_its_promotion_ended_lower_counts_as_measured() -> None:
    study = _teacher_study()
    _add(study, (96.0, 510, 0.31), x=0.3, steps=8, **records.promotion_marks(2))  # below 2's 96.1 %
    assert 2 in {t.number for t in front_trials(study.trials)}
    # 2 stands at its own 96.1 %, under the reference: its twin 1 now adds the most after 0.
    assert enqueue_promotions(study, 5) == [0, 1, 3, 4]


def test_spread_order_covers_the_front_before_filling_it_in() -> None:
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    for i in range(9):  # a staircase: more bytes buy accuracy; 8 is the most accurate
        _add(study, (90.0 + i, 100 * 2 ** i, 1.0), x=i / 10)
    order = [t.number for t in spread_order(front_trials(study.trials))]
    assert order[:3] == [8, 0, 4]  # both ends, then the middle (log bytes)
    assert sorted(order) == list(range(9))


def test_baselines_outside_the_space_and_promotions_are_not_promoted() -> None:
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    _add(study, (98.0, 1000, 0.5), x=0.1, baseline="prune50", outside_space="sparsity 0.5 is not in the space")
    _add(study, (97.0, 900, 0.5), x=0.2, **records.promotion_marks(5))
    assert [t.number for t in promotable(study.trials)] == []


def test_no_trial_is_promoted_twice() -> None:
    study = _study()
    assert enqueue_promotions(study, 2) == [1, 2]
    waiting = [t for t in study.trials if t.state == TrialState.WAITING]  # with the originals' params
    assert [(t.system_attrs["fixed_params"], records.trial_promoted_from(t)) for t in waiting] == [
        ({"x": 0.1}, 1), ({"x": 0.2}, 2)]
    assert promoted_or_queued(study.trials) == {1, 2}
    # Queued (another worker, or a second run, asks again): only what is left.
    assert enqueue_promotions(study, 5) == [3]
    assert enqueue_promotions(study, 5) == []
    assert len([t for t in study.trials if t.state == TrialState.WAITING]) == 3


def test_a_promotion_stopped_from_outside_may_run_again_one_that_failed_may_not() -> None:
    study = _study()
    _add(study, None, x=0.1, state=TrialState.FAIL, **records.promotion_marks(1),
         **records.failure_attrs(records.INTERRUPTED))
    _add(study, None, x=0.2, state=TrialState.FAIL, **records.promotion_marks(2),
         **records.failure_attrs("out of memory"))
    _add(study, None, x=0.3, state=TrialState.PRUNED, **records.promotion_marks(3))
    assert promoted_or_queued(study.trials) == {2, 3}
    assert [t.number for t in promotable(study.trials)] == [1]


# -- the front uses the promoted accuracy ----------------------------------------------------------------
def test_a_complete_promotion_stands_for_its_original_on_the_front() -> None:
    study = _study()
    # Trial 2's promotion: more accurate, now above trial 3 at half its bytes (3 leaves the front).
    p = _add(study, (98.2, 500, 0.5), x=0.2, steps=8, **records.promotion_marks(2))
    front = {t.number for t in front_trials(study.trials)}
    assert front == {0, 1, p}
    assert study.trials[2].values == [97.0, 500, 0.5]  # the original keeps its own values
    assert records.read_trial(study.trials[p]).promoted_from == 2
    # A promotion still running, or one that failed, leaves the original where it was.
    study = _study()
    _add(study, None, x=0.2, state=TrialState.FAIL, **records.promotion_marks(2))
    assert {t.number for t in front_trials(study.trials)} == {0, 1, 2, 3}


def test_a_promotion_that_ended_less_accurate_leaves_its_original_on_the_front() -> None:
    """LeNet-5 (issue 21): trial 12 at 98.72 %, 182,799 B, 0.673x; its 4x promotion ended at 98.69 %,
    182,602 B, 0.671x and took the better file off the front. Both files were measured."""
    study = _study()
    p = _add(study, (96.9, 499, 0.49), x=0.2, steps=8, **records.promotion_marks(2))
    assert superseded(study.trials) == {p}
    assert {t.number for t in front_trials(study.trials)} == {0, 1, 2, 3}
    study = _study()  # a tie: the promotion, whose fine-tune is the longer, stands
    p = _add(study, (97.0, 501, 0.51), x=0.2, steps=8, **records.promotion_marks(2))
    assert superseded(study.trials) == {2} and {t.number for t in front_trials(study.trials)} == {0, 1, p, 3}


def test_one_trial_of_a_plan_stands_whatever_its_promotions_did() -> None:
    study = _study()
    stopped = _add(study, None, x=0.2, state=TrialState.PRUNED, **records.promotion_marks(2))
    assert superseded(study.trials) == set()  # a promotion stopped early leaves its original
    lower = _add(study, (96.5, 500, 0.5), x=0.2, steps=8, **records.promotion_marks(2))
    best = _add(study, (97.5, 520, 0.5), x=0.2, steps=8, **records.promotion_marks(2))  # a second one
    assert superseded(study.trials) == {2, lower} and stopped not in superseded(study.trials)
    assert {t.number for t in front_trials(study.trials)} == {0, 1, best, 3}
    # Neither can stand (over a limit): the more accurate is the one the recommendation sees.
    study = _study()
    p = _add(study, (94.0, 900, 0.9), x=0.5, steps=8, feasible=False, **records.promotion_marks(5))
    assert superseded(study.trials) == {p}


def test_an_infeasible_promotion_leaves_its_original_standing() -> None:
    study = _study()
    p = _add(study, (90.0, 500, 0.5), x=0.2, steps=8, feasible=False, **records.promotion_marks(2))
    assert superseded(study.trials) == {p}
    assert {t.number for t in front_trials(study.trials)} == {0, 1, 2, 3}
    study = _study()  # more accurate, but over a limit: still the original stands
    p = _add(study, (98.9, 500, 0.5), x=0.2, steps=8, feasible=False, **records.promotion_marks(2))
    assert superseded(study.trials) == {p} and {t.number for t in front_trials(study.trials)} == {0, 1, 2, 3}


# -- the schedule ----------------------------------------------------------------------------------------
def test_the_search_stops_when_the_next_trial_would_eat_the_promotions_time() -> None:
    study = _study()  # search trials take 10 s, 8 of them fine-tuning: a 4x promotion 10 + 3 * 8 = 34 s
    trials = study.trials
    schedule = Schedule.start(10, 0.2, 4, timeout=None)
    assert (schedule.n_search, schedule.n_promote) == (8, 2)
    assert schedule.trial_seconds(trials) == 10.0 and schedule.promotion_seconds(trials) == 34.0
    assert schedule.reserve(trials) == 68.0  # two promotions (the front offers three)
    assert not schedule.search_over(trials)  # no timeout: the search runs its n_search trials
    schedule.deadline = time.monotonic() + 80  # 10 s for the next trial + 68 s fit
    assert not schedule.search_over(trials)
    schedule.deadline = time.monotonic() + 75
    assert schedule.search_over(trials)
    assert schedule.promotions_that_fit(trials, 3) == 2  # 75 s: two of 34 s
    # A finished promotion's own seconds replace the estimate.
    _add(study, (98.2, 500, 0.5), x=0.2, steps=8, seconds={"total": 50.0}, **records.promotion_marks(2))
    assert schedule.promotion_seconds(study.trials) == 50.0
    assert schedule.promotions_that_fit(study.trials, 3) == 1


def test_under_a_timeout_the_search_keeps_only_the_promote_share_of_the_trials_time() -> None:
    trials = _study().trials  # a 4x promotion is 34 s; the front offers three
    schedule = Schedule.start(200, 0.2, 4, timeout=1000)
    schedule.begin_trials()  # 1000 s for trials (no profile here)
    assert schedule.n_promote == 40 and schedule.reserve(trials) == 3 * 34.0  # 102 s: under 0.2 x 1000
    schedule.deadline = schedule.trials_from + 300  # 60 s share: one 34 s promotion fits, a second does not
    assert schedule.reserve(trials) == 60.0
    schedule.deadline = schedule.trials_from + 110  # a 22 s share: still a promotion and a half kept
    assert schedule.reserve(trials) == 1.5 * 34.0
    assert not schedule.search_over(trials)  # 10 s for the next trial + 51 s fit; three promotions would not
    schedule.trials_from = None  # before the first trial: the count of promotions rules, as without a timeout
    assert schedule.reserve(trials) == 3 * 34.0


def test_the_expected_end_counts_the_search_left_and_the_promotions() -> None:
    trials = _study().trials
    schedule = Schedule.start(10, 0.2, 4, timeout=None)
    schedule.searched = 5
    end = schedule.expected_end(trials)
    assert end == pytest.approx(time.time() + 3 * 10 + 2 * 34, abs=1)
    schedule.deadline = time.monotonic() + 60  # never after the timeout
    assert schedule.expected_end(trials) == pytest.approx(time.time() + 60, abs=1)
    schedule.phase, schedule.queued, schedule.promoted = "promote", 2, 1
    assert schedule.expected_end(trials) == pytest.approx(time.time() + 34, abs=1)
    assert Schedule.start(10, 0.2, 4, None).expected_end(trials[:1]) is None  # nothing measured yet


def test_the_progress_line_shows_the_phase_and_the_expected_end() -> None:
    from autocomp.study.progress import ProgressLine, clock

    bar = ProgressLine(10)
    try:
        assert bar.head() == "search"
        bar.set_end(time.time() + 120)
        bar.set_phase("promote", total=9)
        assert bar.head() == f"promote, ends ~{clock(bar.ends)}" and bar.tqdm.total == 9
        assert len(clock(time.time())) == 5 and clock(time.time() + 3 * 86400)[:3].isalpha()
    finally:
        bar.close()


# -- a whole run ------------------------------------------------------------------------------------------
SPACE = """\
version: 1
layers:
  - type: Conv2d
    bits: [null, 8, 4]
  - type: Linear
    bits: [null, 8, 4]
    sparsity: {low: 0.0, high: 0.8, step: 0.2}
global:
  steps: 2
constraints:
  max_accuracy_drop: 5.0
"""


def _fake_run(self, plan, path, deadline=None, on_step=None):  # noqa: ANN001, ANN202
    """Bytes from the plan's bits and sparsity; accuracy that a longer fine-tune raises."""
    from autocomp.measure import Metrics
    from autocomp.pipeline.workbench import TrialResult

    keep = [((lp.bits or 32) / 32) * (1 - (lp.sparsity or 0.0)) for lp in plan.layers.values()] or [1.0]
    size = int(1000 * sum(keep) / len(keep)) + 10
    drop = 4.0 * (1 - size / 1010) / (2 if plan.distill.steps > 2 else 1)
    ratio = 0.5 + size / 2020
    Path(path).write_bytes(b"artifact %d" % size)
    m = Metrics(self.teacher_accuracy - drop, size, ratio, ratio, 1.0, 1, 1, 1,
                latency_ratio=ratio, latency_ratio_low=ratio * 0.99, latency_ratio_high=ratio * 1.01)
    return TrialResult(plan, m, None, ratio, [], {"finetune": 0.1 * plan.distill.steps})


@pytest.mark.slow
@pytest.mark.parametrize("factor", [4, 1200])  # 8 steps; 2,400: long, its searched temperature LONG_KD's
def test_a_search_promotes_its_front_with_a_longer_fine_tune(tmp_path, tiny_data, monkeypatch, factor: int) -> None:
    from tiny_models import tiny_cnn

    from autocomp.api import run_search
    from autocomp.config import SearchConfig
    from autocomp.pipeline.workbench import Workbench
    from autocomp.study.space import parse_space

    monkeypatch.setattr(Workbench, "run", _fake_run)
    torch.manual_seed(0)
    config = SearchConfig(model="python", dataset="python", storage=f"sqlite:///{tmp_path / 's.db'}",
                          study_name="s", n_trials=10, promote=0.3, promote_factor=factor,
                          run_dir=str(tmp_path / "run"), keep_artifacts=False, baselines=("teacher", "int8"),
                          profile=False, seeds=0)
    space = parse_space(SPACE.replace("  steps: 2\n", "  steps: 2\n  temperature: {low: 1.0, high: 8.0}\n"))
    study = run_search(config, teacher=tiny_cnn().eval(), data=tiny_data, space=space,
                       progress=False, log=lambda s: None)
    done = [records.read_trial(t) for t in study.trials]
    promoted = [r for r in done if r.promoted_from is not None]
    assert len(study.trials) == 10 and len(promoted) == 3, [(r.number, r.state, r.failure) for r in done]
    for p in promoted:
        original = done[p.promoted_from]
        assert p.state == TrialState.COMPLETE and original.state == TrialState.COMPLETE
        assert p.plan.distill.steps == factor * original.plan.distill.steps == factor * 2
        assert p.plan.layers == original.plan.layers
        long = factor * 2 >= LONG_FINETUNE
        assert p.plan.distill.temperature == (LONG_KD["temperature"] if long else original.plan.distill.temperature)
        assert p.plan.distill.alpha == original.plan.distill.alpha  # the space fixes it: the user's
        assert p.metrics["accuracy"] > original.metrics["accuracy"]  # both accuracies kept
        assert original.baseline != "teacher"
    front = {t.number for t in front_trials(study.trials)}
    assert {p.number for p in promoted} <= front
    assert not front & {p.promoted_from for p in promoted}


@pytest.mark.slow
def test_a_timeout_leaves_time_for_the_promotions_and_is_kept(tmp_path, tiny_data, monkeypatch) -> None:
    from tiny_models import tiny_cnn

    from autocomp.config import SearchConfig
    from autocomp.pipeline.workbench import Workbench
    from autocomp.study import runner
    from autocomp.study.space import parse_space

    def slow_run(self, plan, path, deadline=None, on_step=None):  # noqa: ANN001, ANN202
        time.sleep(0.1 * plan.distill.steps)  # the fine-tune: 0.2 s in a search trial, 0.8 s in a promotion
        return _fake_run(self, plan, path)

    starts = []
    real_start = Schedule.start
    monkeypatch.setattr(Schedule, "start", classmethod(lambda cls, *a: starts.append(time.monotonic())
                                                       or real_start(*a)))
    monkeypatch.setattr(Workbench, "run", slow_run)
    torch.manual_seed(0)
    config = SearchConfig(model="python", dataset="python", storage=f"sqlite:///{tmp_path / 's.db'}",
                          study_name="s", n_trials=200, promote=0.1, promote_factor=4, timeout=8.0,
                          run_dir=str(tmp_path / "run"), keep_artifacts=False, baselines=("teacher",),
                          profile=False, seeds=0)
    run = runner.optimize(config, teacher=tiny_cnn().eval(), data=tiny_data, space=parse_space(SPACE),
                          progress=False, log=lambda s: None)
    took = time.monotonic() - starts[0]
    done = [records.read_trial(t) for t in run.study.trials]
    promoted = [r for r in done if r.promoted_from is not None]
    # The timeout, not n_trials, ended the search (13-14 trials on an idle 2-core host; 7 with two
    # other jobs on its cores).
    assert 4 <= len(done) < 180 and not run.interrupted
    assert promoted and all(r.state == TrialState.COMPLETE for r in promoted), [(r.number, r.failure) for r in done]
    assert took < 8.0 + 1.5, took  # ends at the timeout: no trial started that could not end before it


@pytest.mark.slow
def test_a_timeout_gives_the_profile_and_the_seed_check_only_their_share(tmp_path, tiny_data, monkeypatch) -> None:
    from tiny_models import tiny_cnn

    from autocomp.config import SearchConfig
    from autocomp.pipeline.workbench import Workbench
    from autocomp.study import profile, runner
    from autocomp.study.promotion import PREPARE_SHARE
    from autocomp.study.space import parse_space

    real = profile._untrained

    def slow_untrained(*a, **k):  # noqa: ANN002, ANN003, ANN202 - each value's artifact as slow as a 224-px one
        time.sleep(0.3)
        return real(*a, **k)

    monkeypatch.setattr(profile, "_untrained", slow_untrained)
    monkeypatch.setattr(Workbench, "run", _fake_run)
    torch.manual_seed(0)
    config = SearchConfig(model="python", dataset="python", storage=f"sqlite:///{tmp_path / 's.db'}",
                          study_name="s", n_trials=6, promote=0.0, timeout=8.0, run_dir=str(tmp_path / "run"),
                          keep_artifacts=False, baselines=("teacher",), seeds=4)
    logs: list[str] = []
    run = runner.optimize(config, teacher=tiny_cnn().eval(), data=tiny_data, space=parse_space(SPACE),
                          progress=False, log=logs.append)
    rec = records.read_study(run.study).profile
    # 16 values at 0.3 s each (4.8 s) would not fit the 2 s share: the profile stops starting
    # layers at its part of it, the seed check at the share (each may end one layer's knob of up
    # to 4 values, or one candidate, after it).
    assert rec["unprofiled"] and rec["entries"], rec.get("unprofiled")
    assert rec["seconds"] <= PREPARE_SHARE * 8.0 + 1.2 + 0.8, rec["seconds"]
    assert rec["seed_check"]["predicted_only"] or rec["seed_check"]["unchecked"], rec["seed_check"]
    assert any("share of --timeout" in line and "not profiled" in line for line in logs), logs
    assert len(run.study.trials) == 6  # the trials still ran


@pytest.mark.slow
def test_ctrl_c_in_a_promotion_and_the_resume_that_promotes_it_again(tmp_path, tiny_data, monkeypatch) -> None:
    from tiny_models import tiny_cnn

    from autocomp.config import SearchConfig
    from autocomp.pipeline.workbench import Workbench
    from autocomp.study import runner
    from autocomp.study.space import parse_space

    stops = [1]

    def run(self, plan, path, deadline=None, on_step=None):  # noqa: ANN001, ANN202
        if plan.distill.steps > 2 and stops:
            stops.pop()
            raise KeyboardInterrupt
        return _fake_run(self, plan, path)

    monkeypatch.setattr(Workbench, "run", run)
    torch.manual_seed(0)
    config = SearchConfig(model="python", dataset="python", storage=f"sqlite:///{tmp_path / 's.db'}",
                          study_name="s", n_trials=10, promote=0.2, run_dir=str(tmp_path / "run"),
                          keep_artifacts=False, baselines=("teacher",), profile=False, seeds=0)
    kw = dict(teacher=tiny_cnn().eval(), data=tiny_data, space=parse_space(SPACE), progress=False, log=lambda s: None)
    first = runner.optimize(config, **kw)
    trials = first.study.trials
    assert first.interrupted and len(trials) == 9  # 8 searched, the first promotion stopped
    stopped = trials[-1]
    assert stopped.state == TrialState.FAIL and records.read_trial(stopped).failure == records.INTERRUPTED
    assert records.trial_promoted_from(stopped) is not None
    # The next run promotes it again (an interruption does not count), and nothing twice.
    second = runner.optimize(config, **kw)
    done = [t for t in second.study.trials if t.state == TrialState.COMPLETE]
    promoted = [records.trial_promoted_from(t) for t in done if records.trial_promoted_from(t) is not None]
    assert not second.interrupted and records.trial_promoted_from(stopped) in promoted
    assert len(promoted) == len(set(promoted)) >= 2
