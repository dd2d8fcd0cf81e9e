"""The trial boundary: ``Objective`` turns one Optuna trial into a Plan, runs it, records the metrics.

The latency objective is made of what is stable on a shared machine: the trial's latency
ratio to the teacher, timed interleaved in the same shuffled rounds, times one reference time
of the teacher measured once per study with a long protocol (study attr
``teacher_reference_ms``). The ratio used is the measured median, or exactly 1.0 when its
spread contains 1 (or the artifact is byte-identical to the teacher's), so a difference inside
the spread never makes a point "faster" on the front Optuna, the dashboard and the report see.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch

from autocomp.config import SearchConfig
from autocomp.errors import TrialFailed
from autocomp.measure import reference_latency
from autocomp.pipeline.workbench import Workbench
from autocomp.plan import Plan
from autocomp.study import records
from autocomp.study.failures import TRIAL_LOG, failure_reason
from autocomp.study.promotion import promoted_plan, split_trials
from autocomp.study.recovery import same_plan_as
from autocomp.study.space import SearchSpace
from autocomp.study.storage import enqueued_params


class SamePlan(TrialFailed):
    """The trial's plan is one another trial ran or is running (``recovery.same_plan_as``)."""


EARLY_STOP_MARGIN = 10.0  # points below the accuracy constraint at mid fine-tune = hopeless
CALIBRATION_WAIT = 300.0  # seconds a joining worker waits for the creator's reference and layer timings
# Of the time the profile and the seed check may take (``Schedule.prepare_until``), the profile's
# part: a seed checked on its file beat its prediction by far on ResNet-18 (uniform int4 predicted
# 1.93x the teacher's time, measured 0.67x), so the check keeps a share of its own.
PROFILE_PART = 0.6


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
        else is recorded as the trial's failure (``autocomp.study.failures.failure_reason``), its
        traceback goes to the run's log file, and ``TrialFailed`` tells Optuna to go on with the study.
        """
        try:
            return self.evaluate(trial)
        except optuna.TrialPruned:
            raise
        except SamePlan:
            raise  # its reason is written; no traceback to keep
        except Exception as exc:
            reason = records.trial_failure(trial) if isinstance(exc, TrialFailed) else None
            reason = reason or failure_reason(exc)
            records.write_failure(trial, reason)
            TRIAL_LOG.error("trial %d failed: %s", trial.number, reason, exc_info=exc)
            if isinstance(exc, TrialFailed):
                raise
            raise TrialFailed(reason) from exc

    def evaluate(self, trial: optuna.Trial) -> tuple[float, float, float]:
        """One trial: sample (or take the baseline's) Plan, run it, record the metrics."""
        started = time.monotonic()
        records.clear_failure(trial)
        reference_ms = self.prepare(trial.study)
        deadline = started + self.config.trial_timeout if self.config.trial_timeout else None
        plan = self._plan(trial)
        records.write_plan(trial, plan)
        self._refuse_same_plan(trial)
        # Absolute: the stored path resolves from any directory, not only the one the run started in.
        path = ((self.artifact_dir or self.bench.workdir) / f"trial_{trial.number:05d}.acz").absolute()
        try:
            result = self.bench.run(plan, path, deadline, on_step=self._early_stop(trial, plan))
        except TrialFailed as exc:
            records.write_failure(trial, str(exc))
            raise
        except torch.OutOfMemoryError as exc:
            records.write_failure(trial, f"out of memory: {str(exc).splitlines()[0][:200]}")
            raise TrialFailed("out of memory") from exc
        m = result.metrics
        ratio = self._ratio_used(m, path)
        latency = ratio * reference_ms
        records.write_outcome(
            trial, m.to_dict(), records.Latency(ratio, reference_ms, result.eager_latency_ms),
            records.Artifact(str(path) if self.artifact_dir else None, result.sha256),
            {**result.seconds, "total": time.monotonic() - started}, result.losses[-1] if result.losses else None,
            result.decomposed)
        records.write_constraints(trial, self._constraints(m, latency))
        if not self.artifact_dir:
            path.unlink(missing_ok=True)
        return m.accuracy, float(m.size_bytes), latency

    def _refuse_same_plan(self, trial: optuna.Trial) -> None:
        """Fail, before its fine-tune, a trial whose plan another trial ran or is running.

        Failed, not resampled: Optuna takes a trial's params once, so a new sample is a new
        trial anyway (the next one). Failed, not copied or pruned: Optuna's samplers leave FAIL
        trials out of their model, so the duplicate neither tells them a second time how the
        plan did nor marks a good plan as bad (a PRUNED trial counts as a bad one), and the
        COMPLETE trials stay one per plan. The reason names the trial that holds the result.
        """
        same = same_plan_as(trial.study, trial)
        if same is not None:
            reason = f"same plan as trial {same}"
            records.write_failure(trial, reason)
            raise SamePlan(reason)

    def _plan(self, trial: optuna.Trial) -> Plan:
        """The trial's Plan: sampled, or a baseline's fixed one (nothing sampled: the sampler is not misled)."""
        baseline = records.trial_baseline(trial)
        promoted = records.trial_promoted_from(trial)
        if promoted is not None:
            # A promotion re-runs trial N's own Plan with a longer fine-tune: its params are N's.
            original = records.read_trial(trial.study.get_trials(deepcopy=False)[promoted]).plan
            self.space.sample(trial, self.bench.teacher, self.bench.outputs, seed=self.config.seed)
            return promoted_plan(original, self.config.promote_factor, self.space.globals)
        if not baseline:
            return self.space.sample(trial, self.bench.teacher, self.bench.outputs, seed=self.config.seed)
        template = Plan(distill=self.space.fixed_distill(), quant_mode=self.space.quant_mode, seed=self.config.seed)
        plan = self.bench.baseline_plan(baseline, template)
        # Enqueued with its coordinates (``baseline_points``): record them as the trial's params.
        # Optuna keeps enqueued params privately; without them (a baseline outside the space, a
        # study made before baselines had params, another Optuna) nothing is recorded; nor when
        # the profile dropped one of them from the space (the sampler would read a point outside it).
        params = enqueued_params(trial)
        if params and self._in_space(params):
            self.space.sample(trial, self.bench.teacher, self.bench.outputs, seed=self.config.seed)
        return plan

    def _in_space(self, params: dict[str, Any]) -> bool:
        """Whether every enqueued value is one the (shaped) space can produce."""
        from autocomp.study.baselines import in_domain

        domains = {p.name: p.spec for p in self.space.params(self.bench.teacher, self.bench.outputs)}
        domains.update({f"distill.{k}": v for k, v in self.space.globals.items()})
        return all(name not in domains or in_domain(domains[name], value) for name, value in params.items())

    def prepare(self, study: optuna.Study, deadline: float | None = None) -> float:
        """Once per process: the teacher's reference latency (ms) and the space as the study shaped it.

        Both are measured once per study, by the process that created it, and stored on the
        study: the per-layer profile (``autocomp.study.profile``; with ``--no-profile``, and in
        studies made before it, the layer timings of ``autocomp.study.costs``), then the seeded
        plans it predicts (``autocomp.study.frontier``), then the reference. A worker that
        joined a new study waits for them (up to ``CALIBRATION_WAIT`` s) and a resumed run reads
        them back, so every trial multiplies by the same number and samples the same space (two
        spaces in one study would also break the sampler: a value one offers is not in the
        other's choices). Only if the creator died before storing them does a worker measure.
        ``deadline`` (a ``time.monotonic()``; ``Schedule.prepare_until``): no profiled layer and
        no seed candidate is started after it.
        """
        if self._reference_ms is None:
            rec = records.read_study(study)
            # Wait only in a study with nothing finished yet (its creator is at work); a study
            # made before these were stored, or whose creator died, is measured here.
            wait_until = time.monotonic() + (0 if self.creator else CALIBRATION_WAIT)
            while (not rec.calibrated and time.monotonic() < wait_until
                   and not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))):
                time.sleep(0.5)
                rec = records.read_study(study)
            if rec.profile is not None or (rec.layer_costs is None and self.config.profile):
                self._profiled(study, rec, deadline)
            else:
                from autocomp.study.costs import costed_space  # deferred: times layers in ONNX Runtime

                b = self.bench
                self.space, costs = costed_space(self.space, b.teacher, b.outputs, b.example, b.measure,
                                                 rec.layer_costs)
                if rec.layer_costs is None:
                    records.write_layer_costs(study, costs)
            stored = rec.teacher.reference_ms
            self._reference_ms = float(stored if stored is not None else self._time_reference(study))
        return self._reference_ms

    def _profiled(self, study: optuna.Study, rec: records.StudyRecord, deadline: float | None) -> None:
        """The space shaped by the study's profile (measured here if none is stored), and the
        profile's seeded plans enqueued once per study, after the baselines."""
        from autocomp.study.baselines import baseline_points
        from autocomp.study.profile import dropped_values, measure_profile, shaped_space

        b = self.bench
        # The values the baselines stand on stay, so each baseline is a point of the space. The
        # study's own baselines, not this run's --baselines: every process shapes the same space.
        kept: dict[str, set] = {}
        points = baseline_points(self.space, b.teacher, b.outputs, self.config)
        stored = (rec.config or {}).get("baselines")
        for baseline in self.config.baselines if stored is None else stored:
            for name, value in points[baseline][0].items():
                kept.setdefault(name, set()).add(value)
        profile = rec.profile
        if profile is None:
            # The profile may take PROFILE_PART of the time left to the deadline, the seed check the rest.
            until = None if deadline is None else time.monotonic() + PROFILE_PART * (deadline - time.monotonic())
            profile = measure_profile(b, self.space, progress=b.progress, deadline=until)
            profile["dropped"] = dropped_values(profile, kept)
            records.write_profile(study, profile)
        self.space = shaped_space(self.space, b.teacher, b.outputs, profile, kept)
        # As many seeds as this run has room for after the queued trials and the promotions: a run
        # of N trials runs N. With no room they wait for a run that has some.
        queued = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))
        room = split_trials(self.config.n_trials, self.config.promote)[0] - queued
        if rec.seeds_queued or not self.config.seeds or room <= 0:
            return
        self._queue_seeds(study, profile, min(self.config.seeds, room), room, deadline)

    def _queue_seeds(self, study: optuna.Study, profile: dict, n: int, room: int, deadline: float | None) -> None:
        """The profile's seeded plans, checked on their untrained artifacts, enqueued once: ``n``
        under budgets, then those beating a baseline's plan, ``room`` in all. Candidates the
        ``deadline`` leaves unmeasured are not seeds; past it before the check starts, the
        seeds are the profile's predictions alone."""
        from autocomp.study.baselines import baseline_points
        from autocomp.study.frontier import seed_plans
        from autocomp.study.profile import measure_plans

        b = self.bench
        template = Plan(distill=self.space.fixed_distill(), quant_mode=self.space.quant_mode, seed=self.config.seed)
        baselines = [b.baseline_plan(name, template) for name in self.config.baselines]

        def as_plan(params: dict) -> Plan:
            return self.space.sample(optuna.trial.FixedTrial(params), b.teacher, b.outputs, seed=self.config.seed)

        checked, unchecked = [], []

        def measure(points: list[dict]) -> list[dict | None]:
            done = measure_plans(b, [as_plan(p) for p in points], progress=b.progress, deadline=deadline)
            checked.extend(points[:len(done)])
            unchecked.extend(points[len(done):])
            return done + [None] * (len(points) - len(done))

        started = time.monotonic()
        # Every baseline that is a point of the shaped space, run here or not: what a user would pick by hand.
        points = baseline_points(self.space, b.teacher, b.outputs, self.config)
        hand = {name: params for name, (params, _) in points.items() if params and name != "teacher"}
        late = deadline is not None and started >= deadline
        seeds = seed_plans(profile, self.space, b.teacher, b.outputs, n, None if late else measure, hand)[:room]
        # Checking candidates on their artifacts is part of the profile's time (its share is reported).
        spent = round(time.monotonic() - started, 2)
        # Under --timeout: candidates proposed but never measured, and seeds predicted only.
        check = {"candidates": len(checked), "seconds": spent, "unchecked": len(unchecked), "predicted_only": late}
        records.write_profile(study, profile | {"seconds": round(profile["seconds"] + spent, 2), "seed_check": check})
        for seed in seeds:
            if as_plan(seed.params) in baselines:
                continue  # a baseline runs it already
            study.enqueue_trial(seed.params, user_attrs=records.seed_marks(seed.budget, seed.level, seed.limit,
                                                                             seed.predicted, seed.untrained))
        records.set_system_attr(study, records.SEEDS_QUEUED, True)

    def _time_reference(self, study: optuna.Study) -> float:
        """Time the teacher's reference with the long protocol and store it on the study."""
        m, data = self.bench.measure, self.bench.data
        timing = reference_latency(self.bench.teacher_session, tuple(data.input_shape), m.batch,
                                   min_seconds=m.reference_seconds)
        records.write_teacher_reference(study, {
            "median_ms": timing.median_ms, "q1_ms": timing.q1_ms, "q3_ms": timing.q3_ms,
            "p90_ms": timing.p90_ms, "runs": timing.runs, "min_seconds": m.reference_seconds,
            "batch": m.batch, "threads": m.threads, "runtime": m.runtime, "precision": m.precision})
        return timing.median_ms

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
                    records.write_failure(trial, f"hopeless: {acc:.1f}% at step {step} < {floor:.1f}%")
                    raise optuna.TrialPruned()

        return check
