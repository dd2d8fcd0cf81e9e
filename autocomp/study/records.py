"""What autocomp writes on a study and its trials, named once: keys, typed readers and writers.

Every attr key autocomp stores is spelled in this module and nowhere else; the rest of the
package reads a study through ``read_study`` and a trial through ``read_trial`` (frozen
records), and writes through the ``write_*`` functions. On-disk names never change (Optuna's
tools and scripts read them); older layouts are read here only.

Where things live: trial user attrs (``plan``, ``metrics``, ``fail_reason`` ...); the study's
user attrs for what a table cell of ``optuna studies`` or optuna-dashboard may show (the
teacher's accuracy and size, the input, one runtime line); everything else autocomp reads back
is a study system attr under ``autocomp:``, out of that cell.

Example::

    rec = read_trial(study.trials[3])
    rec.plan, rec.metrics["accuracy"], rec.latency.ratio, rec.failure
    read_study(study).preprocessing["eval_transform"]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from autocomp.plan import Plan
from autocomp.study.storage import set_study_system_attr, set_trial_system_attr, storage_file, study_system_attrs

# -- trial user attrs
PLAN = "plan"
METRICS = "metrics"
FAIL_REASON = "fail_reason"
BASELINE = "baseline"
OUTSIDE_SPACE = "outside_space"
LATENCY_RATIO = "latency_ratio"  # the ratio the latency objective used
TEACHER_REFERENCE_MS = "teacher_reference_ms"  # also a study user attr: the reference every ratio multiplies
EAGER_LATENCY_MS = "eager_latency_ms"
FINAL_LOSS = "final_loss"
SECONDS = "seconds"
ARTIFACT = "artifact"
ARTIFACT_SHA256 = "artifact_sha256"
SEEDED = "seeded"  # a profile-seeded trial: its budget and the profile's prediction (``autocomp.study.frontier``)
PROMOTED_FROM = "promoted_from"  # the trial whose Plan this one re-ran with a longer fine-tune
DECOMPOSED = "decomposed"  # per layer: a tensor decomposition's method, seconds, error or refusal
# -- trial system attr: Optuna's own key for constraint values (its samplers' ``constraints_func``)
CONSTRAINTS = "constraints"
# -- study user attrs
SPACE = "space"
TEACHER_ACCURACY = "teacher_accuracy"
TEACHER_SIZE_BYTES = "teacher_size_bytes"
DATA_NORM = "data_norm"
PREPROCESSING = "preprocessing"
RUNTIME = "runtime"  # user attr: one line; system attr: the whole record
# -- study system attrs, each stored as SYSTEM_PREFIX + name. Written in SYSTEM_ATTRS' order:
# ``identity`` last, as the mark that the creator has written them all.
SYSTEM_PREFIX = "autocomp:"
SYSTEM_ATTRS = ("objectives", "constraint_names", "space_source", "space_text", "teacher_digest",
                "teacher_source_digest", "config", "identity")
LAYER_COSTS = "layer_costs"
TEACHER_REFERENCE = "teacher_reference"
TIMING = "timing"  # the timing input, warm-up and rounds (``autocomp.measure.timing_protocol``)
PROFILE = "profile"  # the per-layer profile (``autocomp.study.profile``): costs, damage, what was dropped
SEEDS_QUEUED = "seeds_queued"  # the profile's seeded plans are enqueued (once per study)


@dataclass(frozen=True)
class Latency:
    """``ratio``: the objective's (x the teacher), times the study's ``reference_ms``; ``eager_ms``: context only."""

    ratio: float | None = None
    reference_ms: float | None = None
    eager_ms: float | None = None


@dataclass(frozen=True)
class Artifact:
    """The kept ``.acz`` (None unless ``--keep-artifacts``) and the sha256 of the file measured.
    Stored absolute since issue 20; earlier studies stored it relative (``artifact_path``)."""

    path: str | None = None
    sha256: str | None = None


def artifact_path(artifact: Artifact, storage_url: str | None = None, run_dir: str | Path | None = None
                  ) -> Path | None:
    """The kept artifact's file, from anywhere: an absolute path as stored; a relative one (older
    studies) tried against the current directory, the storage file's folder and the run
    directory (``artifacts/NAME`` in each); None when none of them holds it.

    Example::

        artifact_path(read_trial(t).artifact, "sqlite:///runs/a/study.db")
    """
    if not artifact.path:
        return None
    stored = Path(artifact.path)
    if stored.is_absolute():
        return stored if stored.is_file() else None
    folders = [Path.cwd()]
    file = storage_file(storage_url) if storage_url else None
    folder = file.parent if file is not None else None
    folders += [f for f in (folder, Path(run_dir) if run_dir else None) if f is not None]
    candidates = [f / stored for f in folders] + [f / "artifacts" / stored.name for f in folders[1:]]
    return next((c.resolve() for c in candidates if c.is_file()), None)


@dataclass(frozen=True)
class TrialRecord:
    number: int
    state: optuna.trial.TrialState
    plan: Plan | None
    metrics: Mapping[str, Any]
    latency: Latency
    artifact: Artifact
    failure: str | None  # why it failed or stopped early
    baseline: str | None  # a fixed plan's name (``teacher``, ``int8`` ...), None for a sampled trial
    outside_space: str | None  # why a baseline had no coordinates in the space
    seconds: Mapping[str, float] = field(default_factory=dict)
    final_loss: float | None = None
    constraints: tuple[float, ...] = ()  # feasible when every value <= 0
    seeded: Mapping[str, Any] | None = None  # {"budget", "level", "limit", "predicted"} of a seeded plan
    promoted_from: int | None = None  # the trial whose Plan this one re-ran with a longer fine-tune
    decomposed: Mapping[str, Any] = field(default_factory=dict)  # ``autocomp.methods._chain``'s notes


@dataclass(frozen=True)
class Teacher:
    accuracy: float | None = None
    size_bytes: int | None = None
    reference_ms: float | None = None  # the number every trial's latency ratio multiplies
    reference: Mapping[str, Any] | None = None  # how it was timed (median, quartiles, runs, settings)
    digest: str | None = None  # of its weights
    source_digest: str | None = None  # of a ``file.py:build`` builder's source
    source_recorded: bool = False  # False in studies made before the source was recorded


@dataclass(frozen=True)
class StudyRecord:
    config: Mapping[str, Any] | None  # the SearchConfig as a dict; None for a study not made by autocomp
    identity: Mapping[str, Any] | None  # None while the creator is still writing the attrs
    space_label: str | None
    space_source: str | None
    space_text: str | None
    objectives: tuple[str, ...]
    constraint_names: tuple[str, ...]
    preprocessing: Mapping[str, Any] | None  # the whole input transform a device must reproduce
    data_norm: Mapping[str, Any] | None  # mean, std and input shape
    runtime: Mapping[str, Any] | None  # the runtime record; None: made before runtimes were recorded
    runtime_line: str | None
    teacher: Teacher
    layer_costs: Any = None
    timing: Mapping[str, Any] | None = None  # how every latency is timed; None before it was recorded
    profile: Mapping[str, Any] | None = None  # the per-layer profile; None before it is measured
    seeds_queued: bool = False

    @property
    def split(self) -> Mapping[str, Any] | None:
        """How the train/validation split was drawn, as the preprocessing record holds it."""
        pre = self.preprocessing or {}
        return pre.get("split")

    @property
    def calibrated(self) -> bool:
        """The creator has stored the profile (or, in older studies, the layer timings) and the
        teacher's reference."""
        return (self.profile is not None or self.layer_costs is not None) and self.teacher.reference_ms is not None


# -- readers ------------------------------------------------------------------------------------------
def read_trial(trial: optuna.trial.FrozenTrial) -> TrialRecord:
    """The trial as a typed record; older studies' layouts read the same way."""
    u = trial.user_attrs
    metrics = u.get(METRICS) or {}
    return TrialRecord(
        number=trial.number, state=trial.state, plan=Plan.from_dict(u[PLAN]) if u.get(PLAN) else None,
        metrics=metrics, latency=Latency(_latency_ratio(trial, metrics), u.get(TEACHER_REFERENCE_MS),
                                         u.get(EAGER_LATENCY_MS)),
        artifact=Artifact(u.get(ARTIFACT), u.get(ARTIFACT_SHA256)), failure=u.get(FAIL_REASON) or None,
        baseline=u.get(BASELINE) or None, outside_space=u.get(OUTSIDE_SPACE), seconds=u.get(SECONDS) or {},
        final_loss=u.get(FINAL_LOSS), constraints=constraint_values(trial), seeded=u.get(SEEDED),
        promoted_from=u.get(PROMOTED_FROM), decomposed=u.get(DECOMPOSED) or {})


def _latency_ratio(trial: optuna.trial.FrozenTrial, metrics: Mapping[str, Any]) -> float | None:
    """The stored ratio (since issue 12); older studies' objective was the absolute median, timed
    beside the teacher, so their ratio is that over the teacher's median of the same rounds."""
    if LATENCY_RATIO in trial.user_attrs:
        return trial.user_attrs[LATENCY_RATIO]
    teacher_ms, values = metrics.get("teacher_latency_ms"), trial.values
    return values[2] / teacher_ms if values and len(values) == 3 and teacher_ms else None


def constraint_values(trial: optuna.trial.FrozenTrial) -> tuple[float, ...]:
    """The trial's constraint values, from Optuna 5's ``FrozenTrial.constraints`` or Optuna 4's list."""
    values = getattr(trial, "constraints", None)
    if values is None:  # optuna < 5 keeps a list under one key
        return tuple(trial.system_attrs.get(CONSTRAINTS) or [])
    return tuple(values.values()) if isinstance(values, Mapping) else tuple(values)


def has_plan(trial: optuna.trial.FrozenTrial) -> bool:
    return PLAN in trial.user_attrs


def plan_layers(trial: optuna.trial.FrozenTrial) -> list[str]:
    """The layers a trial's Plan names, without parsing the Plan."""
    return list((trial.user_attrs.get(PLAN) or {}).get("layers", {}))


def trial_baseline(trial: optuna.trial.FrozenTrial | optuna.Trial) -> str | None:
    """The baseline a trial runs (from its enqueue marks), None for a sampled one: cheap, no Plan parsed."""
    return trial.user_attrs.get(BASELINE) or None


def trial_promoted_from(trial: optuna.trial.FrozenTrial | optuna.Trial) -> int | None:
    """The trial whose Plan a promoted trial re-runs (its enqueue marks), None otherwise."""
    value = trial.user_attrs.get(PROMOTED_FROM)
    return None if value is None else int(value)


def trial_failure(trial: optuna.trial.FrozenTrial | optuna.Trial) -> str | None:
    return trial.user_attrs.get(FAIL_REASON) or None


def queued_plan(trial: optuna.trial.FrozenTrial) -> tuple[dict[str, Any], dict[str, Any]]:
    """A queued trial's params (``fixed_params``) and marks as ``enqueue_trial`` got them (not a failure)."""
    marks = {k: v for k, v in trial.user_attrs.items() if k != FAIL_REASON}
    return dict(trial.system_attrs.get("fixed_params") or {}), marks


def _all_attrs(study: optuna.Study) -> dict[str, Any]:
    """User attrs, then autocomp's system attrs over them: studies made before the system-attr
    layout kept everything in user attrs, and read the same way."""
    system = study_system_attrs(study).items()
    return {**study.user_attrs, **{k.removeprefix(SYSTEM_PREFIX): v for k, v in system if k.startswith(SYSTEM_PREFIX)}}


def read_study(study: optuna.Study) -> StudyRecord:
    """The study's records as one typed value (missing ones None)."""
    a, user = _all_attrs(study), study.user_attrs
    teacher = Teacher(accuracy=user.get(TEACHER_ACCURACY), size_bytes=user.get(TEACHER_SIZE_BYTES),
                      reference_ms=a.get(TEACHER_REFERENCE_MS),
                      reference=a.get(TEACHER_REFERENCE) if user.get(TEACHER_REFERENCE_MS) else None,
                      digest=a.get("teacher_digest"), source_digest=a.get("teacher_source_digest"),
                      source_recorded="teacher_source_digest" in a)
    runtime = a.get(RUNTIME)
    return StudyRecord(
        config=a.get("config"), identity=a.get("identity"), space_label=user.get(SPACE),
        space_source=a.get("space_source"), space_text=a.get("space_text"),
        objectives=tuple(a.get("objectives") or ()), constraint_names=tuple(a.get("constraint_names") or ()),
        preprocessing=a.get(PREPROCESSING), data_norm=a.get(DATA_NORM),
        runtime=runtime if isinstance(runtime, Mapping) else None,
        runtime_line=user.get(RUNTIME) if isinstance(user.get(RUNTIME), str) else None,
        teacher=teacher, layer_costs=a.get(LAYER_COSTS), timing=a.get(TIMING), profile=a.get(PROFILE),
        seeds_queued=bool(a.get(SEEDS_QUEUED)))


def study_attr(study: optuna.Study, key: str, default: Any = None, attrs: dict[str, Any] | None = None) -> Any:
    """One study-level attr by its stored name, wherever it lives (a system attr ``autocomp:KEY``, else a
    user attr: older studies kept everything there), e.g. ``study_attr(study, "config")``; prefer ``read_study``."""
    attrs = attrs if attrs is not None else _all_attrs(study)
    return attrs.get(key, default)


# -- writers ------------------------------------------------------------------------------------------
def set_system_attr(study: optuna.Study, key: str, value: Any) -> None:
    """Store a record autocomp reads back out of the user-attrs table cell (``autocomp:KEY``)."""
    set_study_system_attr(study, SYSTEM_PREFIX + key, value)


@dataclass(frozen=True)
class Identity:
    """What the creator of a study records once: other workers and ``export`` compare or rebuild from it."""

    objectives: tuple[str, ...]
    constraint_names: tuple[str, ...]
    space_source: str
    space_text: str
    teacher_digest: str
    teacher_source_digest: str | None
    config: Mapping[str, Any]  # SearchConfig.to_dict()
    identity: Mapping[str, Any]  # SearchConfig.identity(): what two runs of one study must share


def write_study_identity(study: optuna.Study, record: Identity, space_label: str) -> None:
    """The creator's records, in ``SYSTEM_ATTRS``' order: ``identity`` last, the mark other
    workers take as "all are written"."""
    study.set_user_attr(SPACE, space_label)
    values = {"objectives": list(record.objectives), "constraint_names": list(record.constraint_names),
              "space_source": record.space_source, "space_text": record.space_text,
              "teacher_digest": record.teacher_digest, "teacher_source_digest": record.teacher_source_digest,
              "config": dict(record.config), "identity": dict(record.identity)}
    for key in SYSTEM_ATTRS:
        set_system_attr(study, key, values[key])


def write_layer_costs(study: optuna.Study, record: Any) -> None:
    set_system_attr(study, LAYER_COSTS, record)


def write_profile(study: optuna.Study, record: Mapping[str, Any]) -> None:
    set_system_attr(study, PROFILE, dict(record))


def write_teacher_reference(study: optuna.Study, timing: Mapping[str, Any]) -> None:
    """How the teacher's reference was timed (system attr) and its median (user attr: every
    trial's latency multiplies it)."""
    set_system_attr(study, TEACHER_REFERENCE, dict(timing))
    study.set_user_attr(TEACHER_REFERENCE_MS, timing["median_ms"])


def write_workbench(study: optuna.Study, teacher_accuracy: float, teacher_size_bytes: int,
                    data_norm: Mapping[str, Any], preprocessing: Mapping[str, Any],
                    runtime: Mapping[str, Any], runtime_line: str, timing: Mapping[str, Any] | None = None) -> None:
    """What one process's workbench measured: the teacher, the input it takes, the runtime and
    how latency is timed (system attrs: records too long for the user-attrs cell)."""
    study.set_user_attr(TEACHER_ACCURACY, teacher_accuracy)
    study.set_user_attr(TEACHER_SIZE_BYTES, teacher_size_bytes)
    study.set_user_attr(DATA_NORM, dict(data_norm))
    study.set_user_attr(PREPROCESSING, dict(preprocessing))
    set_system_attr(study, RUNTIME, dict(runtime))
    study.set_user_attr(RUNTIME, runtime_line)
    if timing is not None:
        set_system_attr(study, TIMING, dict(timing))


def baseline_marks(name: str, outside: str | None) -> dict[str, Any]:
    """The user attrs a baseline is enqueued with."""
    return {BASELINE: name, **({OUTSIDE_SPACE: outside} if outside else {})}


def seed_marks(budget: str, level: int, limit: float, predicted: Mapping[str, float],
               untrained: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A seeded plan's user attrs: its budget, prediction and untrained artifact's measurement."""
    untrained = {"untrained": dict(untrained)} if untrained else {}
    return {SEEDED: {"budget": budget, "level": level, "limit": limit, "predicted": dict(predicted)} | untrained}


def promotion_marks(of: int) -> dict[str, Any]:
    """The user attrs of a promoted re-run of trial ``of``."""
    return {PROMOTED_FROM: of}


def write_plan(trial: optuna.Trial, plan: Plan) -> None:
    trial.set_user_attr(PLAN, plan.to_dict())


def failure_attrs(reason: str) -> dict[str, str]:
    """The attrs that record why a trial failed (for a trial failed from outside its process)."""
    return {FAIL_REASON: reason}


def write_failure(trial: optuna.Trial, reason: str) -> None:
    trial.set_user_attr(FAIL_REASON, reason)


def clear_failure(trial: optuna.Trial) -> None:
    """Drop a reason the trial inherited: Optuna's retry of a dead trial copies its user attrs."""
    if trial.user_attrs.get(FAIL_REASON):
        trial.set_user_attr(FAIL_REASON, "")


INTERRUPTED = "interrupted"  # the reason of a trial Ctrl-C stopped
DIED = "its process"  # how the reasons of trials whose process died begin (``autocomp.study.recovery``)
DEFERRED = "not run: the promotions' share of --timeout came first; queued again for the next run"  # defer_queued


def is_interruption(reason: str | None) -> bool:
    """The trial was stopped from outside (Ctrl-C, its process killed, deferred), not by its plan."""
    return bool(reason) and (reason in (INTERRUPTED, DEFERRED) or reason.startswith(DIED))


def write_outcome(trial: optuna.Trial, metrics: Mapping[str, Any], latency: Latency, artifact: Artifact,
                  seconds: Mapping[str, float], final_loss: float | None, decomposed: Mapping[str, Any]) -> None:
    """A finished trial's measurements (its objective values are Optuna's ``trial.values``)."""
    if decomposed:
        trial.set_user_attr(DECOMPOSED, dict(decomposed))
    trial.set_user_attr(METRICS, dict(metrics))
    trial.set_user_attr(LATENCY_RATIO, latency.ratio)
    trial.set_user_attr(TEACHER_REFERENCE_MS, latency.reference_ms)
    trial.set_user_attr(EAGER_LATENCY_MS, latency.eager_ms)
    trial.set_user_attr(FINAL_LOSS, final_loss)
    trial.set_user_attr(SECONDS, dict(seconds))
    trial.set_user_attr(ARTIFACT, artifact.path)
    trial.set_user_attr(ARTIFACT_SHA256, artifact.sha256)  # export reuses the kept file only if it matches


def write_constraints(trial: optuna.Trial, values: Mapping[str, float]) -> None:
    """Store a trial's constraint values (feasible when all <= 0) where every client reads them.

    Optuna's list format, system attr ``constraints``, is what its samplers' ``constraints_func``
    writes; Optuna 5 reads it (as ``{"0": ..., "1": ...}``) and optuna-dashboard 0.21 reads only
    it (it ignores the per-name keys ``trial.set_constraint`` writes, and then draws infeasible
    trials on its front). The names are the study's ``constraint_names``, in the same order.
    """
    if values:
        set_trial_system_attr(trial, CONSTRAINTS, [float(v) for v in values.values()])
