"""A study's integrity, counted: what a multi-worker run must end with (issue 20).

- no plan COMPLETE twice (``duplicates``: extra COMPLETE trials of a plan already complete);
- nothing left RUNNING (``running``); a trial stopped early (PRUNED, ``stopped``) is finished;
- every FAIL with its reason (``fail_without_reason``);
- every kept artifact the file its record names (``sha256_mismatch``, ``artifact_missing``);
- each baseline complete once (``baselines``: name -> COMPLETE count).

Example::

    audit = audit_study(study, storage_url)
    assert audit.clean, audit.line()
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import optuna

from autocomp.pipeline.workbench import file_sha256
from autocomp.study import records

State = optuna.trial.TrialState


@dataclass(frozen=True)
class Audit:
    trials: int
    complete: int
    failed: int
    stopped: int
    duplicates: int
    running: int
    fail_without_reason: tuple[int, ...]
    sha256_checked: int
    sha256_mismatch: tuple[int, ...]
    artifact_missing: tuple[int, ...]
    baselines: Mapping[str, int] = field(default_factory=dict)
    expected_baselines: tuple[str, ...] = ()

    @property
    def clean(self) -> bool:
        once = all(self.baselines.get(name) == 1 for name in self.expected_baselines)
        return (not self.duplicates and not self.running and not self.fail_without_reason
                and not self.sha256_mismatch and not self.artifact_missing and once)

    def line(self) -> str:
        """One line of counts, as ``experiments/bench_workers.py`` prints them."""
        shown = ", ".join(f"{k} {v}" for k, v in sorted(self.baselines.items()))
        return (f"{self.trials} trials ({self.complete} complete, {self.stopped} stopped early, {self.failed} failed): "
                f"{self.duplicates} duplicate plans among COMPLETE, {self.running} RUNNING, "
                f"{len(self.fail_without_reason)} FAIL without a reason, "
                f"{len(self.sha256_mismatch)} of {self.sha256_checked} artifacts not matching their sha256"
                f"{f', {len(self.artifact_missing)} missing' if self.artifact_missing else ''}; "
                f"baselines complete: {shown or 'none'}")


def audit_study(study: optuna.Study, storage_url: str | None = None,
                expected_baselines: Iterable[str] | None = None) -> Audit:
    """Count what a finished multi-worker run must hold (module docstring). ``expected_baselines``
    defaults to those the study's config lists."""
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == State.COMPLETE]
    failed = [t for t in trials if t.state == State.FAIL]
    # A promotion runs trial N's params with a longer fine-tune: a plan of its own.
    plans = Counter(json.dumps([t.params, records.trial_promoted_from(t)], sort_keys=True) for t in complete
                    if t.params)
    checked, mismatch, missing = 0, [], []
    for t in complete:
        art = records.read_trial(t).artifact
        if not art.path:
            continue
        path = records.artifact_path(art, storage_url)
        if path is None:
            missing.append(t.number)
            continue
        checked += 1
        if file_sha256(path) != art.sha256:
            mismatch.append(t.number)
    if expected_baselines is None:
        expected_baselines = (records.read_study(study).config or {}).get("baselines") or ()
    return Audit(
        trials=len(trials), complete=len(complete), failed=len(failed),
        stopped=sum(t.state == State.PRUNED for t in trials),
        duplicates=sum(n - 1 for n in plans.values()),
        running=sum(t.state == State.RUNNING for t in trials),
        fail_without_reason=tuple(t.number for t in failed if not records.trial_failure(t)),
        sha256_checked=checked, sha256_mismatch=tuple(mismatch), artifact_missing=tuple(missing),
        baselines=dict(Counter(records.trial_baseline(t) for t in complete if records.trial_baseline(t))),
        expected_baselines=tuple(expected_baselines))
