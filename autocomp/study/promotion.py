"""Promotion: the Pareto front's points re-run with a longer fine-tune, and the schedule that
fits a search and its promotions into ``--timeout``.

A search ranks candidates on short fine-tunes (the Plan's ``steps``); the front it finds is
then confirmed: each front point's own Plan runs again with ``config.promote_factor`` times the
steps (``promoted_plan``: from ``LONG_FINETUNE`` steps on, its sparsity ramped and its searched KD
settings ``LONG_KD``'s), as a new trial marked ``promoted_from = N`` (``records.promotion_marks``).
Trial N keeps its values; once its promotion is COMPLETE, the more accurate of the two stands for
the Plan on the front (``pareto.superseded``), with the accuracy an export gives.

Which points (``candidates``): the feasible front, without the teacher's baseline (no
fine-tune to lengthen), baselines outside the space (their params do not rebuild their Plan),
promotions themselves, and trials already promoted or queued for it (a second promotion of N
would be the same plan). In which order (``promotable``): the most accurate point smaller and
faster than the teacher first (the most accurate of all when none is), the one a user most often
takes; then each time the point whose promotion is predicted to add the
most to the front's hypervolume (``gain_order``: the report's volume, whose reference is the
teacher 2 points less accurate), a promotion being predicted to win back ``RECOVERY`` of the
point's drop below the teacher. So promotions go where a longer fine-tune can move the front a
user reads: deep cuts a few points down that it lifts within reach, not points far below the
reference that stay there, nor the far ends of a trade-off nobody ships (measured against
``spread_order`` on LeNet-5 and LeNet-300, the fronts differ inside the seeds' spread:
experiments/README.md). Points no promotion is predicted to help follow in ``spread_order``
among themselves. Without the teacher's numbers (a study not made by autocomp) the whole
order is ``spread_order``. The order is decided once on the front the search found: promoting
one point first and then re-reading the front would compare its long fine-tune with the
others' short ones.

The schedule (``Schedule``): a ``--timeout`` covers the profile, the seeded plans, the search
and the promotions, from the moment the profile starts. The search stops starting trials when
the next one (the median search trial's wall seconds) would eat into the time the promotions
need (promotions still to run x the median search trial's seconds with its fine-tune
``promote_factor`` times longer, then the measured median promotion's); a promotion starts only
when it is expected to end before the timeout. Promotion trials the front cannot use (fewer
points than trials) search. Baselines and seeds still queued, which Optuna would run ahead of
any promotion, run first in a run of ``--n-trials``; under ``--timeout`` the promotions' time is
theirs, so the plans still queued then are taken out of the queue (``defer_queued``, failed
with ``records.DEFERRED``) and queued again once the promotions end (``requeue``).

Example::

    split_trials(50, 0.2)                           # (40, 10): 40 search trials, then 10 promotions
    promotable(trials, read_study(study).teacher)  # the front's trials to promote, in order
    enqueue_promotions(study, limit=10)             # [12, 3, 27]: queued, in that order
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import optuna

from autocomp.plan import Plan
from autocomp.study import records
from autocomp.study.hypervolume import contribution, reference_point, to_minimization
from autocomp.study.pareto import MAXIMIZE, front_trials, to_minimize
from autocomp.study.space_model import Domain
from autocomp.study.storage import fail_waiting_trial

State = optuna.trial.TrialState
MIN_TRIALS = 5  # fewer trials in a run: all of them search (a front of 3 points is not worth confirming)
# The share of --timeout the per-layer profile and the seed check may take, from its start: no
# profiled layer or seed candidate starts after it; the rest of the night runs trials.
PREPARE_SHARE = 0.25
PROMOTION_SLACK = 1.5  # under --timeout, the search keeps at least this many promotions' time
# The share of a point's accuracy drop below the teacher its promotion is predicted to win back.
# Measured (2026-12-06, LeNet-5, 4x the steps): 34 promotions of points over 0.3 point down won
# back 39-71 % of it (median 65 %); points within 0.15 point ended within 0.04 of the teacher.
RECOVERY = 0.5
# A promotion at least this many steps long ramps its plan's sparsity over the first RAMP of them
# (``DistillPlan.sparsity_ramp``, unless the plan has its own): on LeNet-300-100's sparse plans the
# ramp was ahead of one-shot masks in 6 of 6 pairs at 2,400 and 9,600 steps, 4 of 6 at 600
# (experiments/gradual_prune.py), so the default 4x promotion of 150 steps stays one-shot.
LONG_FINETUNE = 2400
RAMP = 0.6
# It also distils with LONG_KD where the space searches those settings over its values (the search
# picked them on 150 steps): on the 9 plans 40x or more smaller that LeNet-300-100 promoted at
# 9,600 steps, 3 fine-tune seeds, ahead of the searched ones in 17 of 22 distinct pairs, behind in
# 4, and 9 of 22 runs at or above the teacher against 2 (experiments/promotion_kd.py).
LONG_KD = {"temperature": 2.0, "alpha": 0.9}


def promoted_plan(plan: Plan, factor: int, knobs: Mapping[str, Domain] | None = None) -> Plan:
    """``plan`` with ``factor`` times its fine-tune steps; when that is long, its sparsity ramped
    and each KD setting that ``knobs`` (the space's global knobs) searches over ``LONG_KD``'s
    value set to it.

    Example::

        promoted_plan(plan, 4).distill.steps  # 600 for a plan of 150 steps
        promoted_plan(plan, 64, space.globals).distill.alpha  # 0.9 where the space searches 0.3-0.9
    """
    steps = plan.distill.steps * factor
    if steps < LONG_FINETUNE:
        return plan.with_distill(steps=steps)
    knobs = knobs or {}
    kd = {k: v for k, v in LONG_KD.items() if k in knobs and knobs[k].searched and knobs[k].offers(v)}
    return plan.with_distill(steps=steps, sparsity_ramp=plan.distill.sparsity_ramp or RAMP, **kd)


def split_trials(n_trials: int, share: float) -> tuple[int, int]:
    """``n_trials`` as (search trials, promotion trials): ``share`` of them, rounded half up,
    promote; none when ``share`` is 0 or the run has fewer than ``MIN_TRIALS`` trials.

    Example::

        split_trials(50, 0.2)   # (40, 10)
        split_trials(4, 0.2)    # (4, 0)
    """
    if share <= 0 or n_trials < MIN_TRIALS:
        return n_trials, 0
    n_promote = min(n_trials, math.floor(n_trials * share + 0.5))
    return n_trials - n_promote, n_promote


def promoted_or_queued(trials: Sequence[optuna.trial.FrozenTrial]) -> set[int]:
    """The trials a promotion re-ran, runs or waits to run. A promotion stopped from outside
    (Ctrl-C, its worker killed) does not count: that trial may be promoted again; one that
    failed on its own (out of memory ...) counts, or every run would try it again."""
    taken = set()
    for t in trials:
        of = records.trial_promoted_from(t)
        if of is not None and (t.state != State.FAIL or not records.is_interruption(records.trial_failure(t))):
            taken.add(of)
    return taken


def queued_plans(trials: Sequence[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """Trials waiting in the queue that are not promotions (baselines, seeds, retries)."""
    return [t for t in trials if t.state == State.WAITING and records.trial_promoted_from(t) is None]


Queued = tuple[dict, dict]  # a queued plan's params and user attrs (its marks: baseline, seeded)


def defer_queued(study: optuna.Study) -> list[Queued]:
    """Take the queued plans that are not promotions (seeds, baselines, retries) out of the queue,
    each failed with the reason ``records.DEFERRED``: Optuna runs queued trials first, so under
    ``--timeout`` they would take the promotions' time. The plans taken, for ``requeue``."""
    taken = []
    for t in queued_plans(study.get_trials(deepcopy=False)):
        if fail_waiting_trial(study, t, records.failure_attrs(records.DEFERRED)):
            taken.append(records.queued_plan(t))
    return taken


def requeue(study: optuna.Study, plans: Sequence[Queued]) -> None:
    """Queue again, in their order, the plans ``defer_queued`` took: a resumed run runs them."""
    for params, marks in plans:
        study.enqueue_trial(params, user_attrs=marks)


def can_promote(trial: optuna.trial.FrozenTrial) -> bool:
    """A trial whose Plan a promotion can re-run with a longer fine-tune: it has a Plan that
    fine-tunes (not the teacher's baseline), params that rebuild it (not a baseline outside the
    space) and is not a promotion itself."""
    rec = records.read_trial(trial)
    return (rec.promoted_from is None and rec.plan is not None and rec.plan.distill.steps > 0
            and rec.outside_space is None)


def candidates(trials: Sequence[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """The feasible front's trials a promotion may re-run, in trial order (module docstring)."""
    taken = promoted_or_queued(trials)
    return [t for t in front_trials(trials) if t.number not in taken and can_promote(t)]


def promotable(trials: Sequence[optuna.trial.FrozenTrial], teacher: records.Teacher | None = None,
               limit: int | None = None) -> list[optuna.trial.FrozenTrial]:
    """The first ``limit`` (default all) ``candidates``, in the order to promote them: ``gain_order``
    when the teacher's accuracy, bytes and latency are known, else ``spread_order``."""
    known = teacher is not None and None not in (teacher.accuracy, teacher.size_bytes, teacher.reference_ms)
    order = gain_order(trials, teacher, limit) if known else spread_order(candidates(trials))
    return order if limit is None else order[:max(limit, 0)]


def gain_order(trials: Sequence[optuna.trial.FrozenTrial], teacher: records.Teacher,
               limit: int | None = None) -> list[optuna.trial.FrozenTrial]:
    """The ``candidates`` ordered: the most accurate first (of those smaller and faster than the
    teacher, when there are any), then greedily the one whose promotion, predicted to win back
    ``RECOVERY`` of its drop below the teacher, adds the most hypervolume to the front with the
    promotions before it (ties: the earlier trial); once no promotion is predicted to add any, or
    ``limit`` are ordered, the rest in ``spread_order`` among themselves. A front point whose
    promotion is queued or running (another worker) counts as promoted, not one it ended below.

    Example: the teacher at 99 %; a point at 98 % is predicted at 98.5 % once promoted, one at 90 %
    at 94.5 %, still below the reference (97 %), so it adds nothing and comes last.
    """
    chosen, front, taken = candidates(trials), front_trials(trials), promoted_or_queued(trials)
    if not chosen:
        return []
    ref = reference_point({"accuracy": teacher.accuracy, "size_bytes": teacher.size_bytes,
                           "latency_ms": teacher.reference_ms})
    raw = np.asarray([t.values for t in front], dtype=float)
    points, unit = to_minimization(raw, ref)
    raw[:, 0] += RECOVERY * np.maximum(teacher.accuracy - raw[:, 0], 0.0)
    lifted = to_minimization(raw, ref)[0]
    rows = {t.number: i for i, t in enumerate(front)}
    done = {records.trial_promoted_from(t) for t in trials if t.state == State.COMPLETE}  # back on the front
    elsewhere = [i for i, t in enumerate(front) if t.number in taken - done]
    points[elsewhere] = lifted[elsewhere]
    # The most accurate point inside the teacher's bytes and time first: a point outside adds
    # nothing to the volume and is not what a user deploys (at 224 px the one promotion that fit
    # went to prune50, at the teacher's latency, while the recommended point kept its short fine-tune).
    inside = [t for t in chosen if t.values[1] < teacher.size_bytes and t.values[2] < teacher.reference_ms]
    first = min(inside or chosen, key=lambda t: (-t.values[0], t.number))
    order, left = [first], [t for t in chosen if t is not first]
    points[rows[first.number]] = lifted[rows[first.number]]
    while left and (limit is None or len(order) < limit):
        # A lifted point dominates its original: what promoting it adds is its contribution.
        gains = [contribution(lifted[rows[t.number]], points, unit) for t in left]
        best = int(np.argmax(gains))  # the first of equals: the earlier trial
        if gains[best] <= 1e-12:
            break
        pick = left.pop(best)
        order.append(pick)
        points[rows[pick.number]] = lifted[rows[pick.number]]
    return order + spread_order(left)


def spread_order(trials: Sequence[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """Most accurate first (ties: the earlier trial), then each time the trial farthest from
    those chosen, in objective space scaled to [0, 1] per column (size and latency as logs)."""
    if len(trials) <= 1:
        return list(trials)
    values = np.asarray([t.values for t in trials], dtype=float)
    values[:, 1:] = np.log(np.maximum(values[:, 1:], 1e-12))  # bytes and ms span orders of magnitude
    pts = to_minimize(values, MAXIMIZE)
    span = np.ptp(pts, axis=0)
    pts = (pts - pts.min(axis=0)) / np.where(span > 0, span, 1.0)
    first = min(range(len(trials)), key=lambda i: (-trials[i].values[0], trials[i].number))
    order, dist = [first], np.linalg.norm(pts - pts[first], axis=1)
    while len(order) < len(trials):
        dist[order] = -1.0
        nxt = int(np.argmax(dist))  # the first of equals: the earlier trial
        order.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(pts - pts[nxt], axis=1))
    return [trials[i] for i in order]


def enqueue_promotion(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Queue the re-run of ``trial``'s Plan with a longer fine-tune (``Objective._plan`` makes it)."""
    study.enqueue_trial(dict(trial.params), user_attrs=records.promotion_marks(trial.number))


def enqueue_promotions(study: optuna.Study, limit: int) -> list[int]:
    """Queue promotions of up to ``limit`` front trials not promoted or queued yet, in
    ``promotable``'s order; the numbers of the trials queued."""
    chosen = promotable(study.get_trials(deepcopy=False), records.read_study(study).teacher, limit)
    for t in chosen:
        enqueue_promotion(study, t)
    return [t.number for t in chosen]


@dataclass
class Schedule:
    """A run's trials in two phases, ``search`` then ``promote``, paced by the measured seconds
    per trial (each trial's wall time, else ``records.read_trial(t).seconds["total"]``; the
    fine-tune's share from ``seconds["finetune"]``). ``deadline``: the ``time.monotonic()`` at
    which the run's ``--timeout`` ends, None without one; ``prepare_until``: the moment its
    ``PREPARE_SHARE`` for the profile and the seed check ends; ``share``: with a timeout, the
    most of the trials' time (from ``trials_from``, set when the first trial starts) the search
    keeps for promotions, though never less than ``PROMOTION_SLACK`` promotions' time; the
    counters are this run's trials."""

    deadline: float | None
    factor: int
    n_search: int
    n_promote: int
    prepare_until: float | None = None
    share: float = 0.0
    trials_from: float | None = None
    phase: str = "search"
    searched: int = 0  # search trials finished in this run
    queued: int = 0  # promotions this run queued
    promoted: int = 0  # trials finished in the promote phase

    @classmethod
    def start(cls, n_trials: int, share: float, factor: int, timeout: float | None) -> Schedule:
        """The schedule of a run of ``n_trials`` (``split_trials``), its timeout counted from now."""
        n_search, n_promote = split_trials(n_trials, share)
        if timeout is None:
            return cls(None, factor, n_search, n_promote)
        now = time.monotonic()
        return cls(now + timeout, factor, n_search, n_promote, now + PREPARE_SHARE * timeout, share)

    def begin_trials(self) -> None:
        """The profile and the seeds are done: the trials' time starts now."""
        self.trials_from = time.monotonic()

    def seconds_left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def trial_seconds(self, trials: Sequence[optuna.trial.FrozenTrial]) -> float | None:
        """The median seconds of a finished search trial that fine-tunes; None before one finished."""
        return _median([s["total"] for s in _searched_seconds(trials)])

    def promotion_seconds(self, trials: Sequence[optuna.trial.FrozenTrial]) -> float | None:
        """The median seconds of a finished promotion; before one finished, the median search
        trial's with its fine-tune ``factor`` times longer."""
        done = [_wall_seconds(t) or records.read_trial(t).seconds.get("total") for t in trials
                if t.state == State.COMPLETE and records.trial_promoted_from(t) is not None]
        if measured := _median([s for s in done if isinstance(s, int | float)]):
            return measured
        return _median([s["total"] + (self.factor - 1) * s.get("finetune", s["total"])
                        for s in _searched_seconds(trials)])

    def reserve(self, trials: Sequence[optuna.trial.FrozenTrial]) -> float:
        """Seconds the promotions still to run need: in the search, as many as the front now
        offers up to ``n_promote``; then the queued ones not finished."""
        if self.phase == "search":
            n = min(self.n_promote, len(candidates(trials))) if self.n_promote else 0
        else:
            n = max(self.queued - self.promoted, 0)
        per = self.promotion_seconds(trials) if n else None
        if not per:
            return 0.0
        if self.phase == "search" and self.deadline is not None and self.trials_from is not None:
            # --promote is a share of the time under --timeout: on ResNet-18 at 224 px a promotion
            # takes about 14 minutes, and a front of 5 points would have stopped the search at once.
            # Never under one promotion and a half: a last search trial that ran over the median
            # took the only promotion a reserve of exactly one kept.
            return max(min(n * per, self.share * (self.deadline - self.trials_from)), PROMOTION_SLACK * per)
        return n * per

    def give_back(self, trials: Sequence[optuna.trial.FrozenTrial]) -> int:
        """Move to the search the promotion trials the front has no use for: more than it has
        points to promote, or, without a timeout, all of them while plans other than promotions
        wait in the queue (Optuna would run those first; a count of trials runs them, a timeout
        defers them: ``defer_queued``); how many moved."""
        blocked = self.deadline is None and bool(queued_plans(trials))
        usable = 0 if blocked else min(self.n_promote, len(candidates(trials)))
        extra = self.n_promote - usable
        self.n_search, self.n_promote = self.n_search + extra, usable
        return extra

    def search_over(self, trials: Sequence[optuna.trial.FrozenTrial]) -> bool:
        """The next search trial would end after the time the promotions need begins."""
        if self.deadline is None:
            return False
        per = self.trial_seconds(trials) or 0.0
        return time.monotonic() + per + self.reserve(trials) > self.deadline

    def promotions_that_fit(self, trials: Sequence[optuna.trial.FrozenTrial], wanted: int) -> int:
        """How many of ``wanted`` promotions, run one after another from now, are expected to end
        before the timeout."""
        left, per = self.seconds_left(), self.promotion_seconds(trials)
        if left is None or not per:
            return wanted if left is None or left > 0 else 0
        return max(0, min(wanted, math.floor(left / per)))

    def after_trial(self, trials: Sequence[optuna.trial.FrozenTrial]) -> bool:
        """Count a finished trial of the current phase; True when the phase should stop (the
        next trial would not fit the timeout)."""
        if self.phase == "search":
            self.searched += 1
            return self.search_over(trials)
        self.promoted += 1
        return self.promotions_that_fit(trials, 1) == 0

    def expected_end(self, trials: Sequence[optuna.trial.FrozenTrial]) -> float | None:
        """The wall-clock time (``time.time()``) the run is expected to end, None before any
        trial's seconds are known; never after the timeout."""
        per = self.trial_seconds(trials) if self.phase == "search" else self.promotion_seconds(trials)
        if per is None:
            return None
        search_left = max(self.n_search - self.searched, 0) if self.phase == "search" else 0
        seconds = search_left * per + self.reserve(trials)
        left = self.seconds_left()
        return time.time() + (seconds if left is None else min(seconds, max(left, 0.0)))


def _searched_seconds(trials: Sequence[optuna.trial.FrozenTrial]) -> list[dict[str, float]]:
    """The seconds records of finished trials that searched (no promotion) and fine-tuned (no
    teacher baseline: its trial times no fine-tune); ``total`` is the trial's whole wall time
    where Optuna recorded it (sampling and storage writes included), else the objective's."""
    out = []
    for t in trials:
        if t.state != State.COMPLETE or records.trial_promoted_from(t) is not None \
                or records.trial_baseline(t) == "teacher":
            continue
        seconds = dict(records.read_trial(t).seconds)
        total = _wall_seconds(t) or seconds.get("total")
        if isinstance(total, int | float):
            out.append({**seconds, "total": float(total)})
    return out


def _wall_seconds(trial: optuna.trial.FrozenTrial) -> float | None:
    start, end = trial.datetime_start, trial.datetime_complete
    return (end - start).total_seconds() if start and end else None


def _median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None
