"""Open the Optuna study: create or resume it, refuse a foreign one, record the workbench, load one back.

Objectives, in order: maximize top-1 accuracy (%), minimize artifact bytes, minimize latency
(ms). Every value comes from ``autocomp.measure`` on the trial's artifact. What a study and its
trials store is named in ``autocomp.study.records``; the trial itself is
``autocomp.study.objective.Objective``, the sampler ``autocomp.study.sampler``, the baselines'
coordinates ``autocomp.study.baselines``, and every use of Optuna's private API
``autocomp.study.storage``.
"""

from __future__ import annotations

import json
import secrets
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import torch

from autocomp._user_code import source_digest
from autocomp.config import SearchConfig
from autocomp.errors import AutocompError
from autocomp.models.zoo import state_digest
from autocomp.pipeline.workbench import Workbench
from autocomp.study import records
from autocomp.study.baselines import baseline_points
from autocomp.study.pareto import MAXIMIZE, OBJECTIVES, front_trials
from autocomp.study.recovery import fail_dead_trials, requeue_baselines, requeue_deferred
from autocomp.study.sampler import make_sampler
from autocomp.study.space import SearchSpace, library_dir
from autocomp.study.storage import open_storage, storage_file

DIRECTIONS = ["maximize" if up else "minimize" for up in MAXIMIZE]


def open_study(config: SearchConfig, space: SearchSpace, storage: optuna.storages.BaseStorage,
               teacher: torch.nn.Module, n_new: int,
               outputs: frozenset[str] = frozenset()) -> tuple[optuna.Study, bool]:
    """Create or resume the study; refuse to resume one made from a different model, data, space
    or teacher (its weights, and the source of a ``file.py:build`` builder). On resume, fail
    the trials of dead processes with their reason and enqueue again the baselines that never
    finished (``autocomp.study.recovery``).

    Example::

        study, fresh = open_study(config, space, open_storage(config.storage_url), teacher, 50)
    """
    weights, source = state_digest(teacher), source_digest(config.model)
    existing = _existing(storage, config.name)
    offset = len(existing.trials) if existing is not None else 0
    points = baseline_points(space, teacher, outputs, config)
    try:  # the storage's unique study name makes exactly one process the creator
        sampler = make_sampler(config.sampler, sampler_seed(config, 0, creator=True), n_new)
        study = optuna.create_study(study_name=config.name, storage=storage, directions=DIRECTIONS, sampler=sampler)
    except optuna.exceptions.DuplicatedStudyError:
        sampler = make_sampler(config.sampler, sampler_seed(config, offset, creator=False), max(n_new, offset + n_new))
        study = optuna.load_study(study_name=config.name, storage=storage, sampler=sampler)
    else:
        return _initialize(study, config, space, weights, source, points), True
    _check_directions(study, config.name)
    rec = records.read_study(study)
    if rec.identity is None:
        # Its creator is still writing them, or died first. Write them too (same values) but
        # never enqueue: only the creator does, so baselines are never duplicated.
        return _initialize(study, config, space, weights, source, points, enqueue=False), False
    _check_settings(config, space, rec)
    _check_teacher(config, rec, weights, source)
    fail_dead_trials(study, grace=3 * config.heartbeat)
    # The baselines the study was made with (an empty list too), not this run's.
    stored = (rec.config or {}).get("baselines")
    requeue_baselines(study, config.baselines if stored is None else stored, points)
    requeue_deferred(study)  # seeds a killed run deferred for a promotion and never queued again
    return study, False


def sampler_seed(config: SearchConfig, offset: int, creator: bool) -> int:
    """The sampler's seed: ``--seed`` for the study's creator (a single-process study is
    reproducible), and for a resume in the run directory's own storage ``--seed`` and the
    number of trials already there (it samples anew).

    A process joining a study in a ``--storage`` others may share draws its seed at random:
    two workers must never share one, and no arithmetic on ``--seed``, trial counts or process
    ids can promise that (workers opening a study together see the same count; a creator's pid
    and a joiner's pid plus its offset collided in issue 20). Plans are kept unique by
    ``recovery.same_plan_as`` whatever the seeds.
    """
    if creator or config.storage is None:
        return (config.seed * 100_003 + offset) % 2**32
    return secrets.randbits(32)


def _existing(storage: optuna.storages.BaseStorage, name: str) -> optuna.Study | None:
    names = {s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    return optuna.load_study(study_name=name, storage=storage) if name in names else None


def _check_directions(study: optuna.Study, name: str) -> None:
    if study.directions != [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE,
                            optuna.study.StudyDirection.MINIMIZE]:
        raise AutocompError(f"study {name!r} exists and was not made by autocomp; use another --study-name")


# What makes two devices the same model, for one study's ratios (``check_device_model``).
DEVICE_MODEL = ("cpu", "arch", "isa", "machine", "cores", "runtime", "version")


def check_resume(config: SearchConfig, space: SearchSpace, storage: optuna.storages.BaseStorage) -> None:
    """Before any work (no data loaded, no teacher trained): refuse to resume a study made with
    other settings (model, data, seed ...) or another space, naming what differs. The teacher's
    weights are compared once it exists (``open_study``). A study whose creator is still
    writing its records, or none yet, passes.

    Example::

        check_resume(config, space, open_storage(config.storage_url))
    """
    study = _existing(storage, config.name)
    if study is None:
        return
    _check_directions(study, config.name)
    rec = records.read_study(study)
    if rec.identity is not None:
        _check_settings(config, space, rec)


def _check_settings(config: SearchConfig, space: SearchSpace, rec: records.StudyRecord) -> None:
    """Refuse to resume a study made with other settings or another space, naming each setting."""
    mine = json.loads(json.dumps(config.identity()))
    diff = [k for k in mine if rec.identity.get(k) != mine[k]]
    if diff == ["measure_on"] and rec.identity.get("measure_on") and config.measure_on:
        from autocomp.runtimes.remote import open_device  # opened already: the run's first check

        diff = []  # another device may serve the study if it is the same model
        device = open_device(config.measure_on, config.runtime, config.measure.options)
        check_device_model(config.name, rec.runtime, device.describe())
    if diff:
        values = "; ".join(f"another {k}: {rec.identity.get(k)!r}, this run {mine[k]!r}" for k in diff)
        raise AutocompError(f"study {config.name!r} was made with other settings ({', '.join(diff)}): {values}; "
                            f"use another --study-name, or resume it with its own settings")
    if rec.space_text != space.text:
        raise AutocompError(f"study {config.name!r} was made with another search space "
                            f"({rec.space_source}, this run {space.source}); use another --study-name")


def check_device_model(name: str, study: Mapping[str, Any] | None, mine: Mapping[str, Any]) -> None:
    """Refuse a device of another model than the one the study is timed on (its CPU, ISA, cores,
    runtime and version): ratios timed on two models would mix on one front. A study whose
    creator has not recorded its device yet passes (``record_workbench`` checks again)."""
    theirs = (study or {}).get("device_record")
    if theirs is None or mine.get("measured_on") in (None, study.get("measured_on")):
        return
    differ = [k for k in DEVICE_MODEL if theirs.get(k) != mine["device_record"].get(k)]
    if differ:
        shown = "; ".join(f"{k} {theirs.get(k)!r} there, {mine['device_record'].get(k)!r} here" for k in differ)
        raise AutocompError(f"study {name!r} is timed on {study['measured_on']}, a device of another model than "
                            f"{mine['measured_on']} ({shown}); time it on the same model, or use another --study-name")


def _check_teacher(config: SearchConfig, rec: records.StudyRecord, weights: str, source: str | None) -> None:
    """Refuse to resume a study made with another teacher (its weights, or its builder's source)."""
    teacher = rec.teacher
    if teacher.digest != weights:
        raise AutocompError(f"study {config.name!r} was made with another teacher (weights "
                            f"{teacher.digest}, now {weights}); use another --study-name")
    # Studies made before the builder's source was recorded lack the attr: nothing to compare.
    if teacher.source_recorded and teacher.source_digest != source:
        raise AutocompError(f"study {config.name!r} was made with another teacher: the source of {config.model} "
                            f"changed since (digest {teacher.source_digest}, now {source}); restore it "
                            f"or use another --study-name")


def _initialize(study: optuna.Study, config: SearchConfig, space: SearchSpace, weights: str, source: str | None,
                points: dict[str, tuple[dict[str, Any], str | None]], enqueue: bool = True) -> optuna.Study:
    """Write the study's attrs (``identity`` last: other workers take it as "complete") and
    enqueue the baselines.

    Optuna's tools read the metric names (``study.set_metric_names``). User attrs, which
    ``optuna studies`` and optuna-dashboard print in one table cell, stay few and short (the
    space's name here; the teacher's accuracy, size and input from ``record_workbench``);
    everything else autocomp needs back is a system attr (``autocomp.study.records``).
    """
    with warnings.catch_warnings():  # marked experimental; it is how Optuna's tools name objectives
        warnings.simplefilter("ignore")
        study.set_metric_names(list(OBJECTIVES))
    # The baselines before the identity: a worker that sees the identity also sees them queued,
    # and does not queue them again (it did, racing the creator: 4 of 9 trials of a 3-worker
    # journal study failed as "same plan as trial N").
    if enqueue:
        for name in config.baselines:
            params, outside = points[name]
            study.enqueue_trial(params, user_attrs=records.baseline_marks(name, outside))
    record = records.Identity(OBJECTIVES, tuple(constraint_names(space)), space.source, space.text, weights,
                              source, config.to_dict(), config.identity())
    records.write_study_identity(study, record, _space_label(space.source))
    return study


def _space_label(source: str) -> str:
    """A shipped space's name, else the file's name: what a table cell can show."""
    path = Path(source)
    return path.stem if path.parent == library_dir() else path.name


def constraint_names(space: SearchSpace) -> list[str]:
    """Names of the constraint values every finished trial stores, in their stored order."""
    c = space.constraints
    limits = (("accuracy_drop", c.max_accuracy_drop), ("size_bytes", c.max_size_bytes),
              ("latency_ms", c.max_latency_ms))
    return [name for name, limit in limits if limit is not None]


def record_workbench(study: optuna.Study, bench: Workbench) -> None:
    """Study attrs measured by this process's workbench: the teacher's artifact, the input it takes
    and the runtime it is measured on (``records.read_study``: ``runtime_line`` and ``runtime``)."""
    data = bench.data
    from autocomp.runtimes import summary

    record = bench.teacher_session.describe()
    stored = records.read_study(study).runtime
    check_device_model(study.study_name, stored, record)
    if stored and stored.get("measured_on") not in (None, record.get("measured_on")):
        record = stored  # another device of the same model: the study keeps naming the first (each trial its own)
    # The whole input transform (resize, crop, normalization and where it came from, augmentation,
    # the validation subset the accuracies are measured on): what a device must reproduce. Where
    # every number of the study is measured: the runtime, its version, device, ISA, precision and
    # threads as the teacher's session reports them, and one line for the tables.
    records.write_workbench(study, bench.teacher_accuracy, bench.teacher_path.stat().st_size,
                            {"mean": data.mean, "std": data.std, "input_shape": list(data.input_shape)},
                            data.preprocessing, record, summary(record), bench.timing)


def pareto_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The feasible Pareto front (``autocomp.study.pareto.front_trials``) of a study."""
    return front_trials(study.get_trials(deepcopy=False))


def load_existing_study(storage_url: str, study_name: str) -> optuna.Study:
    """Load a study for report/export; one-line errors for a wrong URL or name."""
    path = storage_file(storage_url)
    if path is not None and not path.is_file():  # Optuna would create an empty one (and its folders)
        raise AutocompError(f"no storage at {storage_url}: {path} is not a file")
    storage = open_storage(storage_url)
    try:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    except Exception as exc:  # an unreachable server surfaces here
        raise AutocompError(f"cannot read storage {storage_url}: {str(exc).splitlines()[0][:200]}") from None
    if study_name not in names:
        known = ", ".join(names[:10]) or "none"
        raise AutocompError(f"no study {study_name!r} in {storage_url} (studies there: {known})")
    return optuna.load_study(study_name=study_name, storage=storage)
