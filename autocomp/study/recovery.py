"""What a run repairs before and between its trials: trials whose process died, baselines that
never finished, and plans another trial already ran.

- ``fail_dead_trials``: a RUNNING trial whose heartbeats stopped (its process was killed or
  hangs), or that never sent one, is failed *with its reason* and retried once (Optuna's
  ``RetryHeartbeatStaleTrialCallback``). Optuna's own stale check would fail it with none; it is
  held off (``storage.OPTUNA_GRACE``) and this one runs at the start of a run and after every trial.
- ``requeue_baselines``: a baseline interrupted (Ctrl-C, a killed worker) or failed is enqueued
  again on resume, once: several resuming workers may each enqueue it, and ``same_plan_as``
  then fails the later copies before any work.
- ``requeue_deferred``: a seed or retry that waited for a promotion (``records.DEFERRED``) and
  was never queued again, because the process was killed during the promotion, is queued again
  on resume.
- ``same_plan_as``: a trial whose sampled plan another trial has run or is running is failed
  with the reason "same plan as trial N", before its fine-tune (``autocomp.study.objective``).

Example::

    fail_dead_trials(study, grace=30)      # [7]: trial 7's worker was killed; a retry is queued
    requeue_baselines(study, ("teacher", "int8"), points)
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import optuna

from autocomp.study import records
from autocomp.study.storage import fail_running_trial, heartbeat_ages, study_storage, trial_id

State = optuna.trial.TrialState
ALIVE = (State.RUNNING, State.WAITING)
RAN = (State.COMPLETE, State.PRUNED)
DIED_EARLY = "its process died before the first heartbeat"


def stale_reason(seconds: float) -> str:
    return f"its process stopped (no heartbeat for {seconds:.0f} s: killed, crashed or hung)"


def fail_dead_trials(study: optuna.Study, grace: float) -> list[int]:
    """Fail (with the reason) and retry once the RUNNING trials whose process is gone: no
    heartbeat for ``grace`` seconds, or none ever and started over ``grace`` seconds ago.

    The reason is written while the trial is still RUNNING (a finished trial takes no attrs),
    then the trial is failed; of several workers checking at once, only the one whose FAIL
    lands retries it. Only RDB storages keep heartbeats; others are left as they are.
    """
    ages = heartbeat_ages(study)
    if ages is None:  # not an RDB storage, or an Optuna that moved its internals
        return []
    now, failed = datetime.now(), []
    with warnings.catch_warnings():  # marked experimental; it is Optuna's own retry
        warnings.simplefilter("ignore")
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
    for t in study.get_trials(deepcopy=False, states=(State.RUNNING,)):
        age = ages.get(trial_id(t))
        if age is not None:
            reason = stale_reason(age) if age > grace else None
        elif t.datetime_start is not None and (now - t.datetime_start).total_seconds() >= grace:
            # Killed between creating its trial and the first heartbeat: Optuna's check skips these forever.
            reason = DIED_EARLY
        else:
            reason = None
        if reason is None or not fail_running_trial(study, t, records.failure_attrs(reason)):
            continue
        retry(study, study_storage(study).get_trial(trial_id(t)))
        failed.append(t.number)
    return failed


def requeue_baselines(study: optuna.Study, names: Iterable[str],
                      points: Mapping[str, tuple[dict[str, Any], str | None]]) -> list[str]:
    """Enqueue again each baseline none of whose trials finished or is running or queued.

    Interruptions and dead processes do not count against a baseline; one that failed with an
    error of its own is run once more, not again on every resume (it would fail the same way).
    """
    trials = study.get_trials(deepcopy=False)
    again = []
    for name in names:
        mine = [t for t in trials if records.trial_baseline(t) == name]
        if any(t.state in RAN + ALIVE for t in mine):
            continue
        errors = [t for t in mine if t.state == State.FAIL and not records.is_interruption(records.trial_failure(t))]
        if len(errors) >= 2 or name not in points:
            continue
        params, outside = points[name]
        study.enqueue_trial(params, user_attrs=records.baseline_marks(name, outside))
        again.append(name)
    return again


def requeue_deferred(study: optuna.Study) -> int:
    """Enqueue again each plan that waited for a promotion (failed with ``records.DEFERRED``) and
    that no later trial holds: the run that deferred it queues it again when its promotions end,
    but a process killed meanwhile never did. Baselines are left to ``requeue_baselines``.
    Returns how many were queued."""
    trials = study.get_trials(deepcopy=False)
    again = 0
    for t in trials:
        if t.state != State.FAIL or records.trial_failure(t) != records.DEFERRED or records.trial_baseline(t):
            continue
        params, marks = records.queued_plan(t)
        if any(u.number > t.number and records.queued_plan(u)[0] == params for u in trials):
            continue
        study.enqueue_trial(params, user_attrs=marks)
        again += 1
    return again


def same_plan_as(study: optuna.Study, trial: optuna.Trial) -> int | None:
    """The number of another trial that ran (COMPLETE or PRUNED) or is running this trial's plan.

    A sampled trial matches equal params; a baseline, another trial of the same baseline. Call
    it after the trial's plan is written: a RUNNING trial counts once its own plan is written,
    so of two trials running one plan, the later to check always sees the other (both may see
    each other and both step aside: no plan runs twice, at worst one sample is lost).
    """
    baseline, params = records.trial_baseline(trial), trial.params
    promoted = records.trial_promoted_from(trial)
    for t in study.get_trials(deepcopy=False, states=RAN + (State.RUNNING,)):
        if t.number == trial.number or (t.state == State.RUNNING and not records.has_plan(t)):
            continue
        if promoted is not None or records.trial_promoted_from(t) is not None:
            # A promotion runs trial N's params with a longer fine-tune: the same plan as another
            # promotion of N only, not N's own nor a sample of the same params.
            if records.trial_promoted_from(t) == promoted:
                return t.number
        elif baseline:
            if records.trial_baseline(t) == baseline:
                return t.number
        elif t.params == params and (params or not records.trial_baseline(t)):
            # A baseline outside the space has no params: not the plan of an empty-params sample.
            return t.number
    return None
