"""The Optuna study: sampler, objective, constraints, baselines, early stop (storages: ``autocomp.study.storage``).

Objectives, in order: maximize top-1 accuracy (%), minimize artifact bytes, minimize latency
(ms). Every value comes from ``autocomp.measure`` on the trial's artifact. The Plan is stored
on the trial (user attr ``plan``), with the metrics, so the report and ``export`` need only
the storage URL.

The latency objective is made of what is stable on a shared machine: the trial's latency
ratio to the teacher, timed interleaved in the same shuffled rounds, times one reference time
of the teacher measured once per study with a long protocol (study attr
``teacher_reference_ms``). The ratio used is the measured median, or exactly 1.0 when its
spread contains 1 (or the artifact is byte-identical to the teacher's), so a difference inside
the spread never makes a point "faster" on the front Optuna, the dashboard and the report see.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
import torch

from autocomp._user_code import source_digest
from autocomp.config import SearchConfig
from autocomp.errors import AutocompError, TrialFailed
from autocomp.measure import reference_latency
from autocomp.models.layers import compute_layers
from autocomp.models.zoo import state_digest
from autocomp.pipeline.workbench import Workbench
from autocomp.plan import BASELINES, Plan
from autocomp.study.failures import TRIAL_LOG, failure_reason
from autocomp.study.pareto import MAXIMIZE, OBJECTIVES, front_trials
from autocomp.study.space import Domain, SearchSpace, library_dir
from autocomp.study.storage import (
    enqueued_params,
    fail_running_trial,
    heartbeat_trial_ids,
    open_storage,
    set_study_system_attr,
    set_trial_system_attr,
    storage_file,
    study_storage,
    study_system_attrs,
    trial_id,
)
from autocomp.study.storage import probe_storage as probe_storage  # re-exported for callers of autocomp.study.create

DIRECTIONS = ["maximize" if up else "minimize" for up in MAXIMIZE]
EARLY_STOP_MARGIN = 10.0  # points below the accuracy constraint at mid fine-tune = hopeless
# What autocomp reads back from a study lives in its system attrs under this prefix, so the
# user-attrs cell of `optuna studies` and optuna-dashboard stays narrow; ``study_attr`` reads it.
# Written in this order: ``identity`` last, as the mark that the creator has written them all.
SYSTEM_PREFIX = "autocomp:"
SYSTEM_ATTRS = ("objectives", "constraint_names", "space_source", "space_text", "teacher_digest",
                "teacher_source_digest", "config", "identity")
CALIBRATION_WAIT = 300.0  # seconds a joining worker waits for the creator's reference and layer timings


def make_sampler(name: str, seed: int, n_trials: int) -> optuna.samplers.BaseSampler:
    """Samplers read each trial's constraints (``write_constraints``) to prefer feasible points."""
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
    # False in a process that joined a study another one created: that one times the teacher's
    # reference and the layers, and this one waits for them, so every worker searches the same
    # space and multiplies by the same number.
    creator: bool = True
    _reference_ms: float | None = field(default=None, init=False, repr=False)

    def __call__(self, trial: optuna.Trial) -> tuple[float, float, float]:
        """The trial boundary: whatever a trial raises becomes a FAIL with a one-line reason.

        ``optuna.TrialPruned`` (stopped early) and ``KeyboardInterrupt`` pass through; anything
        else is recorded as ``fail_reason`` (``autocomp.study.failures.failure_reason``), its traceback
        goes to the run's log file, and ``TrialFailed`` tells Optuna to go on with the study.
        """
        try:
            return self.evaluate(trial)
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            reason = trial.user_attrs.get("fail_reason") if isinstance(exc, TrialFailed) else None
            reason = reason or failure_reason(exc)
            trial.set_user_attr("fail_reason", reason)
            TRIAL_LOG.error("trial %d failed: %s", trial.number, reason, exc_info=exc)
            if isinstance(exc, TrialFailed):
                raise
            raise TrialFailed(reason) from exc

    def evaluate(self, trial: optuna.Trial) -> tuple[float, float, float]:
        """One trial: sample (or take the baseline's) Plan, run it, record the metrics."""
        started = time.monotonic()
        reference_ms = self._prepare(trial.study)
        deadline = started + self.config.trial_timeout if self.config.trial_timeout else None
        baseline = trial.user_attrs.get("baseline")
        if baseline:  # fixed plans: nothing is sampled, so the sampler is not misled
            template = Plan(distill=self.space.fixed_distill(), quant_mode=self.space.quant_mode, seed=self.config.seed)
            plan = self.bench.baseline_plan(baseline, template)
            # Enqueued with its coordinates (``baseline_points``): record them as the trial's params.
            # Optuna keeps enqueued params privately; without them (a baseline outside the space, a
            # study made before baselines had params, another Optuna) nothing is recorded.
            if enqueued_params(trial):
                self.space.sample(trial, self.bench.teacher, self.bench.outputs, seed=self.config.seed)
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
        ratio = self._ratio_used(m, path)
        latency = ratio * reference_ms
        total = time.monotonic() - started
        trial.set_user_attr("metrics", m.to_dict())
        trial.set_user_attr("latency_ratio", ratio)
        trial.set_user_attr("teacher_reference_ms", reference_ms)
        trial.set_user_attr("eager_latency_ms", result.eager_latency_ms)
        trial.set_user_attr("final_loss", result.losses[-1] if result.losses else None)
        trial.set_user_attr("seconds", {**result.seconds, "total": total})
        trial.set_user_attr("artifact", str(path) if self.artifact_dir else None)
        trial.set_user_attr("artifact_sha256", result.sha256)  # export reuses the kept file only if it matches
        write_constraints(trial, self._constraints(m, latency))
        if not self.artifact_dir:
            path.unlink(missing_ok=True)
        return m.accuracy, float(m.size_bytes), latency

    def _prepare(self, study: optuna.Study) -> float:
        """Once per process: the teacher's reference latency (ms) and the timed space.

        Both are measured once per study, by the process that created it, and stored on the
        study (user attr ``teacher_reference_ms``; ``teacher_reference`` and ``layer_costs`` as
        system attrs, see ``study_attr``); a worker
        that joined a new study waits for them (up to ``CALIBRATION_WAIT`` s) and a resumed run reads
        them back, so every trial multiplies by the same number and samples the same space (two
        spaces in one study would also break the sampler: a value one offers is not in the
        other's choices). Only if the creator died before storing them does a worker measure.
        """
        if self._reference_ms is None:
            attrs = _all_attrs(study)
            # Wait only in a study with nothing finished yet (its creator is at work); a study
            # made before these were stored, or whose creator died, is measured here.
            deadline = time.monotonic() + (0 if self.creator else CALIBRATION_WAIT)
            while (not {"layer_costs", "teacher_reference_ms"} <= set(attrs) and time.monotonic() < deadline
                   and not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))):
                time.sleep(0.5)
                attrs = _all_attrs(study)
            from autocomp.study.costs import costed_space  # deferred: times layers in ONNX Runtime

            b = self.bench
            self.space, record = costed_space(self.space, b.teacher, b.outputs, b.example, b.measure,
                                              attrs.get("layer_costs"))
            if "layer_costs" not in attrs:
                set_system_attr(study, "layer_costs", record)
            stored = attrs.get("teacher_reference_ms")
            if stored is None:
                m, data = self.bench.measure, self.bench.data
                timing = reference_latency(self.bench.teacher_session, tuple(data.input_shape), m.batch,
                                           min_seconds=m.reference_seconds)
                set_system_attr(study, "teacher_reference", {
                    "median_ms": timing.median_ms, "q1_ms": timing.q1_ms, "q3_ms": timing.q3_ms,
                    "p90_ms": timing.p90_ms, "runs": timing.runs, "min_seconds": m.reference_seconds,
                    "batch": m.batch, "threads": m.threads, "runtime": m.runtime, "precision": m.precision})
                study.set_user_attr("teacher_reference_ms", timing.median_ms)
                stored = timing.median_ms
            self._reference_ms = float(stored)
        return self._reference_ms

    def _ratio_used(self, m: Any, path: Path) -> float:
        """The latency ratio the objective uses: the measured median, or exactly 1.0 when the
        spread contains 1 or the artifact is the teacher's own file (the same bytes run the same)."""
        teacher = self.bench.teacher_path
        if path.stat().st_size == teacher.stat().st_size and path.read_bytes() == teacher.read_bytes():
            return 1.0
        if m.latency_ratio is None:  # never from Workbench.run, which always times the teacher beside
            raise TrialFailed("latency was measured without the teacher beside it: no ratio")
        return m.ratio.used()

    def _constraints(self, m: Any, latency_ms: float) -> dict[str, float]:
        """Feasible when every value is <= 0 (Optuna's convention)."""
        c = self.space.constraints
        out = {}
        if c.max_accuracy_drop is not None:
            out["accuracy_drop"] = self.bench.teacher_accuracy - m.accuracy - c.max_accuracy_drop
        if c.max_size_bytes is not None:
            out["size_bytes"] = float(m.size_bytes - c.max_size_bytes)
        if c.max_latency_ms is not None:
            out["latency_ms"] = latency_ms - c.max_latency_ms
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
        if floor <= self.bench.chance_accuracy:  # a floor at or below chance means nothing: no early stop
            return None

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
               teacher: torch.nn.Module, n_new: int,
               outputs: frozenset[str] = frozenset()) -> tuple[optuna.Study, bool]:
    """Create or resume the study; refuse to resume one made from a different model, data, space
    or teacher (its weights, and the source of a ``file.py:build`` builder).

    Example::

        study, fresh = open_study(config, space, open_storage(config.storage_url), teacher, 50)
    """
    weights, source = state_digest(teacher), source_digest(config.model)
    names = {s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    offset = len(optuna.load_study(study_name=config.name, storage=storage).trials) if config.name in names else 0
    # Seeded by the trials already there, so a resumed run samples anew; workers sharing an
    # explicit --storage also mix in their process id, or workers started together would
    # sample the same plans.
    seed = config.seed * 100_003 + offset + (os.getpid() if config.storage else 0)
    sampler = make_sampler(config.sampler, seed % 2**32, max(n_new, offset + n_new))
    points = baseline_points(space, teacher, outputs, config)
    try:  # the storage's unique study name makes exactly one process the creator
        study = optuna.create_study(study_name=config.name, storage=storage, directions=DIRECTIONS, sampler=sampler)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=config.name, storage=storage, sampler=sampler)
    else:
        return _initialize(study, config, space, weights, source, points), True
    attrs = _all_attrs(study)
    if study.directions != [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE,
                            optuna.study.StudyDirection.MINIMIZE]:
        raise AutocompError(f"study {config.name!r} exists and was not made by autocomp; use another --study-name")
    identity = study_attr(study, "identity", attrs=attrs)
    if identity is None:
        # Its creator is still writing them, or died first. Write them too (same values) but
        # never enqueue: only the creator does, so baselines are never duplicated.
        return _initialize(study, config, space, weights, source, points, enqueue=False), False
    mine = json.loads(json.dumps(config.identity()))
    diff = [k for k in mine if identity.get(k) != mine[k]]
    if diff:
        raise AutocompError(
            f"study {config.name!r} was made with other settings ({', '.join(diff)}); use another --study-name"
        )
    if study_attr(study, "space_text", attrs=attrs) != space.text:
        raise AutocompError(f"study {config.name!r} was made with another search space; use another --study-name")
    if attrs.get("teacher_digest") != weights:
        raise AutocompError(f"study {config.name!r} was made with another teacher (weights "
                            f"{attrs.get('teacher_digest')}, now {weights}); use another --study-name")
    # Studies made before the builder's source was recorded lack the attr: nothing to compare.
    if "teacher_source_digest" in attrs and attrs["teacher_source_digest"] != source:
        raise AutocompError(f"study {config.name!r} was made with another teacher: the source of {config.model} "
                            f"changed since (digest {attrs['teacher_source_digest']}, now {source}); restore it "
                            f"or use another --study-name")
    return study, False


def _initialize(study: optuna.Study, config: SearchConfig, space: SearchSpace, weights: str, source: str | None,
                points: dict[str, tuple[dict[str, Any], str | None]], enqueue: bool = True) -> optuna.Study:
    """Write the study's attrs (``identity`` last: other workers take it as "complete") and
    enqueue the baselines.

    Optuna's tools read the metric names (``study.set_metric_names``). User attrs, which
    ``optuna studies`` and optuna-dashboard print in one table cell, stay few and short (the
    space's name here; the teacher's accuracy, size and input from ``record_workbench``);
    everything else autocomp needs back (``SYSTEM_ATTRS``) is a system attr under ``autocomp:``,
    read by ``study_attr``.
    """
    with warnings.catch_warnings():  # marked experimental; it is how Optuna's tools name objectives
        warnings.simplefilter("ignore")
        study.set_metric_names(list(OBJECTIVES))
    study.set_user_attr("space", _space_label(space.source))
    values = {"objectives": list(OBJECTIVES), "constraint_names": constraint_names(space),
              "space_source": space.source, "space_text": space.text, "teacher_digest": weights,
              "teacher_source_digest": source, "config": config.to_dict(), "identity": config.identity()}
    for key in SYSTEM_ATTRS:
        set_system_attr(study, key, values[key])
    if enqueue:
        for name in config.baselines:
            params, outside = points[name]
            marks = {"baseline": name, **({"outside_space": outside} if outside else {})}
            study.enqueue_trial(params, user_attrs=marks)
    return study


def _system_attrs(study: optuna.Study) -> dict[str, Any]:
    system = study_system_attrs(study)
    return {k.removeprefix(SYSTEM_PREFIX): v for k, v in system.items() if k.startswith(SYSTEM_PREFIX)}


def _all_attrs(study: optuna.Study) -> dict[str, Any]:
    return {**study.user_attrs, **_system_attrs(study)}


def set_system_attr(study: optuna.Study, key: str, value: Any) -> None:
    """Store a record autocomp reads back (``study_attr``) out of the user-attrs table cell."""
    set_study_system_attr(study, SYSTEM_PREFIX + key, value)


def study_attr(study: optuna.Study, key: str, default: Any = None, attrs: dict[str, Any] | None = None) -> Any:
    """A study-level attr autocomp wrote, wherever it lives: ``SYSTEM_ATTRS`` in the study's
    system attrs (``autocomp:KEY``), the teacher's measurements in user attrs; studies made
    before this layout kept everything in user attrs.

    Example::

        config = study_attr(study, "config")   # the SearchConfig as a dict
    """
    attrs = attrs if attrs is not None else _all_attrs(study)
    return attrs.get(key, default)


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


def write_constraints(trial: optuna.Trial, values: dict[str, float]) -> None:
    """Store a trial's constraint values (feasible when all <= 0) where every client reads them.

    Optuna's list format, system attr ``constraints``, is what its samplers' ``constraints_func``
    writes; Optuna 5 reads it (as ``{"0": ..., "1": ...}``) and optuna-dashboard 0.21 reads only
    it (it ignores the per-name keys ``trial.set_constraint`` writes, and then draws infeasible
    trials on its front). The names are the study's ``constraint_names``, in the same order.
    """
    if values:
        set_trial_system_attr(trial, "constraints", [float(v) for v in values.values()])


def baseline_points(space: SearchSpace, teacher: torch.nn.Module, outputs: frozenset[str],
                    config: SearchConfig) -> dict[str, tuple[dict[str, Any], str | None]]:
    """Each baseline's coordinates in the space: ``{name: (params, None)}``, or ``({}, why)``
    when its Plan is not a point of the space (a value outside a dimension's domain, a layer or
    knob the space leaves alone or fixes otherwise). Such a baseline runs without params: giving
    it some would tell the sampler and every foreign tool a point it did not measure.

    The teacher's Plan differs from its coordinates in one thing no space searches here: it
    runs no fine-tune (``steps`` 0). Its coordinates are the uncompressed corner, and its
    ``baseline`` attr says what it is.
    """
    layer_names = list(compute_layers(teacher))
    params_of_space = space.params(teacher, outputs)
    assigned: dict[str, dict[str, Domain]] = {}
    for p in params_of_space:
        assigned.setdefault(p.layer, {})[p.knob] = p.spec
    template = Plan(distill=space.fixed_distill(), quant_mode=space.quant_mode, seed=config.seed)
    out: dict[str, tuple[dict[str, Any], str | None]] = {}
    for name in BASELINES:
        plan = Plan.baseline(name, layer_names, template, outputs)
        params: dict[str, Any] = {}
        why = None
        for layer in layer_names:
            for knob, value in plan.layer(layer).to_dict().items():
                domain = assigned.get(layer, {}).get(knob)
                if domain is None and knob in plan.layer(layer).active:
                    why = why or f"{layer}.{knob} is {value!r}, a setting the space never makes"
                elif domain is not None and not _in_domain(domain, value):
                    why = why or f"{layer}.{knob} is {value!r}, outside the space's domain"
        for p in params_of_space:
            if p.spec.choices is not None or p.spec.low is not None:
                params[p.name] = plan.layer(p.layer).to_dict()[p.knob]
        for knob, domain in space.globals.items():
            value = getattr(plan.distill, knob)
            if domain.choices is not None or domain.low is not None:
                if not _in_domain(domain, value):
                    why = why or f"distill.{knob} is {value!r}, outside the space's domain"
                params[f"distill.{knob}"] = value
        out[name] = ({}, why) if why else (params, None)
    return out


def _in_domain(domain: Domain, value: Any) -> bool:
    """Whether ``value`` is one the space can produce for this knob (Optuna's own grid tolerance)."""
    if domain.choices is not None:
        return any(c is None if value is None else (c is not None and c == value) for c in domain.choices)
    if domain.low is None:
        return value == domain.fixed
    if value is None or isinstance(value, bool) or not domain.low <= value <= domain.high:
        return False
    if domain.step is None:
        return not domain.integer or float(value).is_integer()
    k = (value - domain.low) / domain.step
    return abs(k - round(k)) < 1e-8


def fail_orphaned_trials(study: optuna.Study, grace: float) -> list[int]:
    """Fail (and retry once) RUNNING trials that never sent a heartbeat and started over
    ``grace`` seconds ago.

    A process killed between creating its trial and the trial's first heartbeat leaves a
    RUNNING trial with no heartbeat row, which Optuna's stale check skips forever (seen in the
    SIGKILL test). Only RDB storages keep heartbeats; others are left as they are.
    """
    beating = heartbeat_trial_ids(study)
    if beating is None:  # not an RDB storage, or an Optuna that moved its internals
        return []
    now, failed = datetime.now(), []
    with warnings.catch_warnings():  # marked experimental; it is Optuna's own retry
        warnings.simplefilter("ignore")
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if trial_id(t) in beating or t.datetime_start is None or (now - t.datetime_start).total_seconds() < grace:
            continue
        if not fail_running_trial(study, t, "its process died before the first heartbeat"):
            continue
        retry(study, study_storage(study).get_trial(trial_id(t)))
        failed.append(t.number)
    return failed


def record_workbench(study: optuna.Study, bench: Workbench) -> None:
    """Study attrs measured by this process's workbench: the teacher's artifact, the input it takes
    and the runtime it is measured on (``runtime``: one line; ``study_attr(study, "runtime")``:
    the whole record)."""
    data = bench.data
    study.set_user_attr("teacher_accuracy", bench.teacher_accuracy)
    study.set_user_attr("teacher_size_bytes", bench.teacher_path.stat().st_size)
    study.set_user_attr("data_norm", {"mean": data.mean, "std": data.std, "input_shape": list(data.input_shape)})
    # The whole input transform (resize, crop, normalization and where it came from, augmentation,
    # the validation subset the accuracies are measured on): what a device must reproduce.
    study.set_user_attr("preprocessing", data.preprocessing)
    # Where every number of the study is measured: the runtime, its version, device, ISA, precision
    # and threads as the teacher's session reports them (system attr), and one line for the tables.
    from autocomp.runtimes import summary

    record = bench.teacher_session.describe()
    set_system_attr(study, "runtime", record)
    study.set_user_attr("runtime", summary(record))


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
