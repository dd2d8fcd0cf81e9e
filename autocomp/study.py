"""The Optuna study: storage, sampler, objective, constraints, baselines, early stop.

Objectives, in order: maximize top-1 accuracy (%), minimize artifact bytes, minimize latency
(ms). Every value comes from ``autocomp.measure`` on the trial's artifact. The Plan is stored
on the trial (user attr ``plan``), with the metrics, so the report and ``export`` need only
the storage URL.
"""

from __future__ import annotations

import json
import os
import random
import time
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
import torch

from autocomp.config import SearchConfig
from autocomp.errors import AutocompError, TrialFailed
from autocomp.pareto import MAXIMIZE, OBJECTIVES, front_trials
from autocomp.plan import Plan
from autocomp.space import SearchSpace
from autocomp.trial import Workbench

DIRECTIONS = ["maximize" if up else "minimize" for up in MAXIMIZE]
EARLY_STOP_MARGIN = 10.0  # points below the accuracy constraint at mid fine-tune = hopeless


def open_storage(url: str, heartbeat: int = 10) -> optuna.storages.BaseStorage:
    """RDB storage (SQLite, PostgreSQL, MySQL) with heartbeats, or a journal file.

    Heartbeats let a later run find trials a killed process left RUNNING (silent for
    ``3 * heartbeat`` seconds), mark them failed and retry their parameters once.
    """
    try:
        if url.startswith("journal:") or url.endswith((".log", ".journal")):
            from optuna.storages.journal import JournalFileBackend, JournalStorage

            path = url.removeprefix("journal:")
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(path))
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            engine = {"connect_args": {"timeout": 60}}
        else:
            engine = {"pool_pre_ping": True}
        for attempt in range(5):
            try:
                with warnings.catch_warnings():  # heartbeats are marked experimental; they are what we need
                    warnings.simplefilter("ignore")
                    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
                    return optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=heartbeat,
                                                      grace_period=3 * heartbeat,
                                                      heartbeat_stale_trial_callback=retry)
            except Exception:
                # Workers starting together race to create Optuna's tables; the loser's error is
                # transient (the tables now exist). The URL itself was checked by probe_storage.
                if attempt == 4:
                    raise
                time.sleep(0.5 + random.random())
    except Exception as exc:  # bad URLs and unreachable servers raise many types
        raise AutocompError(f"cannot open storage {url}: {str(exc).splitlines()[0][:200]}") from None
    raise AssertionError("unreachable")


def probe_storage(url: str) -> None:
    """Check a storage URL without creating anything: a one-line error if it cannot work."""
    if url.startswith("journal:") or url.endswith((".log", ".journal")):
        parent = Path(url.removeprefix("journal:")).parent
        if parent.exists() and not parent.is_dir():
            raise AutocompError(f"journal storage {url}: {parent} is not a directory")
        return
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if path.exists() and not path.is_file():
            raise AutocompError(f"storage {url}: {path} is not a file")
        return
    try:
        import sqlalchemy

        engine = sqlalchemy.create_engine(url, pool_pre_ping=True)
        with engine.connect():
            pass
        engine.dispose()
    except Exception as exc:  # bad URLs, missing drivers and unreachable servers raise many types
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise AutocompError(f"cannot reach storage {url}: {detail}") from None


def make_sampler(name: str, seed: int, n_trials: int) -> optuna.samplers.BaseSampler:
    """Samplers read each trial's constraints (``trial.set_constraint``) to prefer feasible points."""
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        # NSGA-II samples at random for its whole first generation: size it to the budget.
        population = max(4, min(50, n_trials // 4))
        return optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # `group` is marked experimental
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(4, min(10, n_trials // 3)),
                                          multivariate=True, group=True)


@dataclass
class Objective:
    bench: Workbench
    space: SearchSpace
    config: SearchConfig
    artifact_dir: Path | None

    def __call__(self, trial: optuna.Trial) -> tuple[float, float, float]:
        started = time.monotonic()
        deadline = started + self.config.trial_timeout if self.config.trial_timeout else None
        baseline = trial.user_attrs.get("baseline")
        if baseline:  # fixed plans: no parameters are sampled, so the sampler is not misled
            template = Plan(distill=self.space.fixed_distill(), quant_mode=self.space.quant_mode, seed=self.config.seed)
            plan = self.bench.baseline_plan(baseline, template)
        else:
            plan = self.space.sample(trial, self.bench.teacher, self.bench.outputs, seed=self.config.seed)
        trial.set_user_attr("plan", plan.to_dict())
        path = (self.artifact_dir or self.bench.workdir) / f"trial_{trial.number:05d}.acz"
        try:
            result = self.bench.run(plan, path, deadline, on_step=self._early_stop(trial, plan))
        except TrialFailed as exc:
            trial.set_user_attr("fail_reason", str(exc))
            raise
        except torch.OutOfMemoryError as exc:
            trial.set_user_attr("fail_reason", f"out of memory: {str(exc).splitlines()[0][:200]}")
            raise TrialFailed("out of memory") from exc
        m = result.metrics
        total = time.monotonic() - started
        trial.set_user_attr("metrics", m.to_dict())
        trial.set_user_attr("eager_latency_ms", result.eager_latency_ms)
        trial.set_user_attr("final_loss", result.losses[-1] if result.losses else None)
        trial.set_user_attr("seconds", {**result.seconds, "total": total})
        trial.set_user_attr("artifact", str(path) if self.artifact_dir else None)
        trial.set_user_attr("artifact_sha256", result.sha256)  # export reuses the kept file only if it matches
        for key, value in self._constraints(m).items():
            trial.set_constraint(key, value)
        if not self.artifact_dir:
            path.unlink(missing_ok=True)
        return m.accuracy, float(m.size_bytes), m.latency_ms

    def _constraints(self, m: Any) -> dict[str, float]:
        """Feasible when every value is <= 0 (Optuna's convention)."""
        c = self.space.constraints
        out = {}
        if c.max_accuracy_drop is not None:
            out["accuracy_drop"] = self.bench.teacher_accuracy - m.accuracy - c.max_accuracy_drop
        if c.max_size_bytes is not None:
            out["size_bytes"] = float(m.size_bytes - c.max_size_bytes)
        if c.max_latency_ms is not None:
            out["latency_ms"] = m.latency_ms - c.max_latency_ms
        return out

    def _early_stop(self, trial: optuna.Trial, plan: Any):  # noqa: ANN202
        """Stop a trial whose accuracy at mid fine-tune is far under the accuracy constraint.

        Optuna's pruners refuse multi-objective studies, so the trial raises TrialPruned itself.
        """
        limit = self.space.constraints.max_accuracy_drop
        half = plan.distill.steps // 2
        if limit is None or half == 0:
            return None
        floor = self.bench.teacher_accuracy - limit - EARLY_STOP_MARGIN

        def check(step: int, student: torch.nn.Module) -> None:
            if step == half:
                # The floor is 10 points under the limit: 512 samples decide it (standard error <= 2.2
                # points) without a long eager pass over 224-px images.
                acc = self.bench.eager_accuracy(student, limit=512)
                if acc < floor:
                    trial.set_user_attr("fail_reason", f"hopeless: {acc:.1f}% at step {step} < {floor:.1f}%")
                    raise optuna.TrialPruned()

        return check


def open_study(config: SearchConfig, space: SearchSpace, storage: optuna.storages.BaseStorage,
               teacher_digest: str, n_new: int) -> tuple[optuna.Study, bool]:
    """Create or resume the study; refuse to resume one made from a different model or data."""
    names = {s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    offset = len(optuna.load_study(study_name=config.name, storage=storage).trials) if config.name in names else 0
    # Seeded by the trials already there, so a resumed run samples anew; workers sharing an
    # explicit --storage also mix in their process id, or workers started together would
    # sample the same plans.
    seed = config.seed * 100_003 + offset + (os.getpid() if config.storage else 0)
    sampler = make_sampler(config.sampler, seed % 2**32, max(n_new, offset + n_new))
    try:  # the storage's unique study name makes exactly one process the creator
        study = optuna.create_study(study_name=config.name, storage=storage, directions=DIRECTIONS, sampler=sampler)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=config.name, storage=storage, sampler=sampler)
    else:
        return _initialize(study, config, space, teacher_digest), True
    attrs = study.user_attrs
    if study.directions != [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE,
                            optuna.study.StudyDirection.MINIMIZE]:
        raise AutocompError(f"study {config.name!r} exists and was not made by autocomp; use another --study-name")
    if "identity" not in attrs:
        # Its creator is still writing them, or died first. Write them too (same values) but
        # never enqueue: only the creator does, so baselines are never duplicated.
        return _initialize(study, config, space, teacher_digest, enqueue=False), False
    mine = json.loads(json.dumps(config.identity()))
    diff = [k for k in mine if attrs["identity"].get(k) != mine[k]]
    if diff:
        raise AutocompError(
            f"study {config.name!r} was made with other settings ({', '.join(diff)}); use another --study-name"
        )
    if attrs.get("space_text") != space.text:
        raise AutocompError(f"study {config.name!r} was made with another search space; use another --study-name")
    if attrs.get("teacher_digest") != teacher_digest:
        raise AutocompError(f"study {config.name!r} was made with another teacher (weights differ)")
    return study, False


def _initialize(study: optuna.Study, config: SearchConfig, space: SearchSpace, teacher_digest: str,
                enqueue: bool = True) -> optuna.Study:
    study.set_user_attr("identity", config.identity())
    study.set_user_attr("config", config.to_dict())
    study.set_user_attr("space_text", space.text)
    study.set_user_attr("space_source", space.source)
    study.set_user_attr("teacher_digest", teacher_digest)
    study.set_user_attr("objectives", list(OBJECTIVES))
    if enqueue:
        for name in config.baselines:
            study.enqueue_trial({}, user_attrs={"baseline": name})
    return study


def fail_orphaned_trials(study: optuna.Study, grace: float) -> list[int]:
    """Fail (and retry once) RUNNING trials that never sent a heartbeat and started over
    ``grace`` seconds ago.

    A process killed between creating its trial and the trial's first heartbeat leaves a
    RUNNING trial with no heartbeat row, which Optuna's stale check skips forever (seen in the
    SIGKILL test). Only RDB storages keep heartbeats; others are left as they are.
    """
    storage = getattr(study._storage, "_backend", study._storage)  # Optuna wraps RDB storage in a cache
    if not isinstance(storage, optuna.storages.RDBStorage):
        return []
    try:  # Optuna has no public query for "has this trial a heartbeat"
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        with _create_scoped_session(storage.scoped_session) as session:
            beating = {row.trial_id for row in session.query(models.TrialHeartbeatModel.trial_id).all()}
    except Exception:  # a future Optuna may move these; then only its own stale check runs
        return []
    now, failed = datetime.now(), []
    with warnings.catch_warnings():  # marked experimental; it is Optuna's own retry
        warnings.simplefilter("ignore")
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if t._trial_id in beating or t.datetime_start is None or (now - t.datetime_start).total_seconds() < grace:
            continue
        try:
            storage.set_trial_user_attr(t._trial_id, "fail_reason", "its process died before the first heartbeat")
            if not storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:  # finished meanwhile by a live worker
            continue
        retry(study, study._storage.get_trial(t._trial_id))
        failed.append(t.number)
    return failed


def record_workbench(study: optuna.Study, bench: Workbench) -> None:
    """Study attrs measured by this process's workbench: the teacher's artifact and the input it takes."""
    data = bench.data
    study.set_user_attr("teacher_accuracy", bench.teacher_accuracy)
    study.set_user_attr("teacher_size_bytes", bench.teacher_path.stat().st_size)
    study.set_user_attr("data_norm", {"mean": data.mean, "std": data.std, "input_shape": list(data.input_shape)})
    # The whole input transform (resize, crop, normalization and where it came from, augmentation,
    # the validation subset the accuracies are measured on): what a device must reproduce.
    study.set_user_attr("preprocessing", data.preprocessing)


def pareto_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The feasible Pareto front (``autocomp.pareto.front_trials``) of a study."""
    return front_trials(study.get_trials(deepcopy=False))


def load_existing_study(storage_url: str, study_name: str) -> optuna.Study:
    """Load a study for report/export; one-line errors for a wrong URL or name."""
    storage = open_storage(storage_url)
    try:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    except Exception as exc:  # an unreachable server surfaces here
        raise AutocompError(f"cannot read storage {storage_url}: {str(exc).splitlines()[0][:200]}") from None
    if study_name not in names:
        known = ", ".join(names[:10]) or "none"
        raise AutocompError(f"no study {study_name!r} in {storage_url} (studies there: {known})")
    return optuna.load_study(study_name=study_name, storage=storage)
