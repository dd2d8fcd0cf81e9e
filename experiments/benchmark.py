"""Benchmark: the default search against random search, the profile alone and the uniform baselines.

One process, one teacher and one ``Workbench`` per config: every run (row x seed) is its own
study with the same trial budget, the same space and the same brief fine-tune, and every
number is measured on the trial's exported artifact in ONNX Runtime. Each uniform baseline
(``int8``, ``int4``, ``prune50``, ``prune90``, ``svd50``, ``channels50``; plus the uncompressed
``teacher``) is a fixed plan, run once.

    python experiments/benchmark.py --quick                      # offline digits, about 2 minutes
    python experiments/benchmark.py --config experiments/lenet5.yaml --trials 50 --seeds 0,1,2,3,4
    python experiments/benchmark.py --config experiments/lenet5.yaml --samplers tpe,random,profile,nsga2 \\
        --storage sqlite:///runs/benchmark/lenet5.db --out runs/benchmark/lenet5
    python experiments/benchmark.py --rescore runs/benchmark/lenet5/runs.json   # score it again, no trials

Rows (``--samplers``; every one a study as ``autocomp search --sampler NAME --seed S`` makes it,
minus the enqueued baselines):

- ``tpe`` (and ``nsga2``, and the candidates of ``variant_sampler``): the default search: the
  per-layer profile, the space it shapes, its seeded plans first, the front's points promoted
  to a longer fine-tune at the end (config ``profile``, ``seeds``, ``promote``).
- ``NAME-spread`` (``tpe-spread``): that search, its promotions in ``promotion.spread_order``
  (the order before 2026-12-06) instead of by predicted hypervolume gain.
- ``random``: plain random search, no profile and no promotion: the reference of
  ``regret/random``, as in every earlier result.
- ``profile``: the profile's allocation alone: its seeded plans, fine-tuned, and nothing
  searched or promoted (what a ModelOpt/MCT-style per-layer allocation gives).
- ``NAME-noprofile`` (``tpe-noprofile``, ``nsga2-noprofile``): that search with ``--no-profile``.

What the columns mean (every search row is the median over its seeds):

- ``HV``: hypervolume of the run's points in (accuracy, bytes, latency), normalized to the box
  between the reference point and the ideal point (100 %, 0 bytes, 0 x). Reference: the
  teacher's accuracy - 2 points, the fp32 artifact's bytes, the teacher's latency. Latency
  enters as the ratio to the fp32 teacher timed in the same interleaved rounds as the trial,
  so a slow spell of a shared machine hits both and the runs stay comparable.
- ``HV@20%``: HV of the run's first 20 % of trials (by number) over its final HV, in percent.

Of a trial and its finished promotion, only the more accurate is scored, as ``autocomp search``'s
front shows them (``pareto.left_out``); HV@20% takes the early trials with their own values.
- dominance (of a baseline by a run's front, of a profile-only point by the search's): no worse
  in accuracy and bytes, and in latency ratio within ``LATENCY_TIE`` (3 %, the timing's noise
  floor), and better in one of them (latency: by more than 3 %); the findings also give the
  count with every difference counting. A profile-only point the search neither dominates nor
  matches is "not behind by more than the fine-tune's accuracy spread" when the search has a
  point as small and as fast at most that spread less accurate: the 90 % quantile of the
  accuracy differences between fine-tunes of one Plan at different seeds, from the Plans within
  1 point of the teacher that the benchmark's studies fine-tuned at more than one seed
  (``accuracy_spread``; LeNet-5: 0.05-0.07 point from 66-87 pairs in three runs).
- ``regret``: HV of the best front pooled over every run and baseline of this benchmark,
  minus the run's HV (0 = the run found the whole pooled front).
- ``x@0`` / ``x@0.5`` / ``x@1``: fp32 artifact bytes / bytes of the smallest artifact at no drop
  (at least the teacher's accuracy) / within 0.5 / 1 point of it (Deep Compression's "39x", "40x
  at no loss"); ``-`` when none is.
- ``lat@1``: latency of the fastest artifact within 1 point, as a ratio to the fp32 teacher. In
  the medians over seeds, a seed with no point at x@ or lat@1 counts as 1x (it ships the teacher).
- ``trials/h``: trials started per hour of wall time (failed and early-stopped ones count;
  the wall time includes the profile).
- ``profile %``: share of the run's wall time spent measuring the per-layer profile.
- ``outside %``: share of the run's wall time spent outside fine-tuning (building the student
  and its KD steps, including the early-stop accuracy check at mid fine-tune) and evaluation
  (``seconds.measure``: the artifact's accuracy pass, its latency timing beside the teacher's,
  params and MACs). Everything else counts as outside: the profile, export and packing
  (``export %``), the eager-PyTorch reference numbers (``reference %``), the sampler, storage
  and Optuna.
"""

from __future__ import annotations

import os

# As the CLI does, before torch is imported: spinning OpenMP waits collapse on shared cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import contextlib
import hashlib
import json
import math
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from autocomp.config import SAMPLERS, SearchConfig, read_config_file
from autocomp.errors import AutocompError
from autocomp.measure.latency import MIN_SPREAD
from autocomp.models.zoo import check_fits
from autocomp.pipeline.setup import prepare
from autocomp.pipeline.workbench import Workbench
from autocomp.plan import BASELINES
from autocomp.study.create import open_study, record_workbench
from autocomp.study.hypervolume import hypervolume, to_minimization
from autocomp.study.objective import Objective
from autocomp.study.pareto import Member, dominated_by, left_out, to_minimize, unique_front
from autocomp.study.promotion import Schedule
from autocomp.study.records import TrialRecord, read_study, read_trial
from autocomp.study.space import SearchSpace, load_space

HERE = Path(__file__).resolve().parent
UNIFORM_BASELINES = tuple(b for b in BASELINES if b != "teacher")
DEFAULT_SAMPLERS = ("tpe", "random", "profile")
QUICK = {"config": str(HERE / "default.yaml"), "trials": 20, "seeds": "0,1", "samplers": "tpe,random,profile"}
COLUMNS = ["run", "seeds", "trials", "HV", "HV@20%", "regret", "regret/random", "HV acc+size", "x@0", "x@0.5", "x@1",
           "lat@1", "trials/h", "profile %", "outside %"]
# Latency ratios of two points timed in different rounds that differ by less than this share are
# equally fast: the measurement's floor (``autocomp.measure.latency``: A/A sessions of one file
# differ by up to ~2 %, and each ratio's spread is at least +-3 %).
LATENCY_TIE = MIN_SPREAD
EARLY_SHARE = 0.2  # HV@20%: the first fifth of a run's trials
# An accuracy difference between two brief fine-tunes is inside their spread when at least 10 % of
# the pairs of fine-tunes of one Plan differ by as much or more (``accuracy_spread``; the
# differences being symmetric, the 90 % quantile of their size is a one-sided test at 5 %).
SPREAD_QUANTILE = 0.9
MIN_PAIRS = 10  # fewer pairs than this: no spread is measured, every difference counts
SPREAD_WITHIN = 1.0  # points: the spread is measured on Plans this close to the teacher (x@1's range)
PROFILE_ONLY = "profile"  # the row of the profile's seeded plans alone
NO_PROFILE = "-noprofile"  # suffix: that search without the profile
SPREAD = "-spread"  # suffix: that search promoting in ``promotion.spread_order`` (the order before 2026-12-06)


class TimedWorkbench(Workbench):
    """A ``Workbench`` that also clocks every rebuild (student + fine-tune), early-stopped ones too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rebuild_seconds = 0.0

    def rebuild(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return super().rebuild(*args, **kwargs)
        finally:
            self.rebuild_seconds += time.perf_counter() - start


@dataclass
class Run:
    """One study of the benchmark: a sampler at a seed, or the fixed baselines."""

    label: str
    seed: int | None
    points: list[dict[str, Any]] = field(default_factory=list)  # one per finished trial, but those in ``replaced``
    # Finished trials another trial of their Plan stands for, as on ``autocomp search``'s front
    # (``_resplit``: of a trial and its promotion, the more accurate): not scored.
    replaced: list[dict[str, Any]] = field(default_factory=list)
    started: int = 0
    pruned: int = 0
    failed: int = 0
    lost: list[str] = field(default_factory=list)  # "baseline or #trial: why" of unfinished trials
    wall_s: float = 0.0  # from the study's creation to its last trial: the profile included
    profile_s: float = 0.0  # measuring the per-layer profile (its record's own clock)
    profiled: bool = False  # the study measured a per-layer profile
    finetune_s: float = 0.0
    export_s: float = 0.0
    measure_s: float = 0.0
    reference_s: float = 0.0  # eager-PyTorch accuracy/latency recorded for reference (not objectives)

    @property
    def outside_share(self) -> float:
        spent = self.finetune_s + self.measure_s + self.profile_s  # the profile has its own column
        return max(0.0, self.wall_s - spent) / self.wall_s if self.wall_s else math.nan


@dataclass(frozen=True)
class Arm:
    """How one row's studies are made: the sampler, and the settings of ``autocomp search`` it changes."""

    label: str
    sampler: str  # an ``autocomp`` sampler or a ``variant_sampler`` candidate
    profile: bool | None = None  # None: the config's (``autocomp search``'s default: on)
    promote: bool = True  # False: no promoted re-runs (promote=0)
    only_seeds: bool = False  # run the profile's seeded plans and nothing else
    spread: bool = False  # promote in ``spread_order``, not by predicted hypervolume gain


def arm(label: str) -> Arm:
    """The row ``label`` names: ``random`` is plain random search (no profile, no promotion: the
    reference of every earlier result), ``profile`` the profile's seeded plans alone,
    ``NAME-noprofile`` search NAME with ``--no-profile`` and ``NAME-spread`` search NAME promoting
    in ``spread_order``; any other name is that sampler's default search (profile, seeded plans,
    promotion)."""
    if label == "random":
        return Arm(label, "random", profile=False, promote=False)
    if label == PROFILE_ONLY:
        return Arm(label, "tpe", profile=True, promote=False, only_seeds=True)
    if label.endswith(NO_PROFILE):
        return Arm(label, label.removesuffix(NO_PROFILE), profile=False)
    if label.endswith(SPREAD):
        return Arm(label, label.removesuffix(SPREAD), spread=True)
    return Arm(label, label)


@dataclass
class Teacher:
    accuracy: float
    size_bytes: int
    latency_ms: float = math.nan  # median of the paired timings of every trial


# -- samplers ------------------------------------------------------------------------------------
def variant_sampler(label: str, seed: int, n_trials: int) -> optuna.samplers.BaseSampler | None:
    """Candidates beside ``autocomp.study.sampler.make_sampler``'s: None for its own names.

    ``tpe-indep`` (TPE without the multivariate/group model), ``tpe-sN`` (TPE with N startup
    trials), ``nsga2-pN`` (NSGA-II, population N), ``gp`` (Gaussian process, Optuna's GPSampler).
    """
    import warnings

    label = arm(label).sampler
    if label in SAMPLERS:
        return None
    startup = max(4, min(10, n_trials // 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental-feature warnings
        if label == "tpe-indep":
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
        if m := re.fullmatch(r"tpe-s(\d+)", label):
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=int(m[1]), multivariate=True, group=True)
        if m := re.fullmatch(r"nsga2-p(\d+)", label):
            return optuna.samplers.NSGAIISampler(population_size=max(2, int(m[1])), seed=seed)
        if label == "gp":
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
    raise AutocompError(f"unknown sampler {label!r}: use {', '.join(SAMPLERS)}, {PROFILE_ONLY}, tpe-indep, tpe-sN, "
                        f"nsga2-pN, gp, or one of them + {NO_PROFILE} or {SPREAD}")


# -- running -------------------------------------------------------------------------------------
def _study_name(config: SearchConfig, label: str, seed: int | None) -> str:
    return (f"bench-{config.name}-{label}" + (f"-s{seed}" if seed is not None else ""))[:100]


def study_config(config: SearchConfig, row: Arm, seed: int | None, baselines: Sequence[str] = ()) -> SearchConfig:
    """The settings ``autocomp search`` would run ``row`` at ``seed`` with (the fixed baselines'
    study: no profile, nothing seeded or promoted: each is one fixed plan)."""
    fixed = bool(baselines)
    profile = config.profile if row.profile is None else row.profile
    return replace(config, seed=config.seed if seed is None else seed, study_name=_study_name(config, row.label, seed),
                   sampler=row.sampler if row.sampler in SAMPLERS else "random", baselines=tuple(baselines),
                   storage=None, keep_artifacts=False, profile=profile and not fixed,
                   seeds=0 if fixed else (config.seeds or 8) if row.only_seeds else config.seeds,
                   promote=config.promote if row.promote and not fixed else 0.0)


def run_study(bench: TimedWorkbench, space: SearchSpace, config: SearchConfig, label: str, seed: int | None,
              n_trials: int, storage: optuna.storages.BaseStorage, baselines: Sequence[str] = (),
              log: Callable[[str], None] = print) -> Run:
    """One study on the shared workbench; ``baselines`` enqueues those fixed plans instead of sampling.

    The study is prepared (profile, shaped space, seeded plans, the teacher's reference) and
    searched by the code ``autocomp search`` runs, on the clock of the run's wall time.
    """
    row = arm(label)
    cfg = replace(study_config(config, row, seed, baselines), n_trials=n_trials)
    study, fresh = open_study(cfg, space, storage, bench.teacher, n_trials)
    if not fresh:
        raise AutocompError(f"study {cfg.study_name!r} already exists in the storage: give the benchmark a new "
                            "--storage")
    if seed is not None and (sampler := variant_sampler(label, seed, n_trials)) is not None:
        study.sampler = sampler
    record_workbench(study, bench)
    run = Run(label, seed)
    bench.rebuild_seconds = 0.0
    start = time.perf_counter()
    objective = Objective(bench, space, cfg, None)
    # As in ``runner.optimize``: a --timeout counts from before the profile.
    schedule = Schedule.start(cfg.n_trials, cfg.promote, cfg.promote_factor, cfg.timeout)
    objective.prepare(study)
    if row.only_seeds:  # the seeded plans queued, and no trial more (``promote`` is 0)
        cfg = replace(cfg, n_trials=len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))))
        if not cfg.n_trials:
            raise AutocompError("the profile seeded no plan: the `profile` row has nothing to run")
        schedule = Schedule.start(cfg.n_trials, 0.0, cfg.promote_factor, schedule.seconds_left())
    search(study, objective, cfg, schedule, log, spread=row.spread)
    run.wall_s = time.perf_counter() - start
    run.finetune_s = bench.rebuild_seconds
    profile = read_study(study).profile
    run.profiled = profile is not None
    run.profile_s = float(profile.get("seconds", 0.0)) if profile else 0.0
    for t in study.get_trials(deepcopy=False):
        run.started += 1
        if t.state == optuna.trial.TrialState.PRUNED:
            run.pruned += 1
        if t.state != optuna.trial.TrialState.COMPLETE:
            run.failed += t.state == optuna.trial.TrialState.FAIL
            rec = read_trial(t)
            run.lost.append(f"{rec.baseline or f'#{t.number}'}: {t.state.name.lower()} ({rec.failure or 'no reason'})")
            continue
        rec = read_trial(t)
        m, sec = rec.metrics, rec.seconds
        run.export_s += sec.get("export", 0.0)
        run.measure_s += sec.get("measure", 0.0)
        run.reference_s += sec.get("reference", 0.0)
        run.points.append({
            "trial": t.number, "baseline": rec.baseline or "",
            "accuracy": t.values[0], "size_bytes": int(t.values[1]), "latency_ms": t.values[2],
            "teacher_latency_ms": m.get("teacher_latency_ms"),
            # The ratio the objective used (interleaved with the teacher, 1.0 inside its spread);
            # studies from before it was stored: the value over the teacher timed beside it (``records``).
            "latency_ratio": rec.latency.ratio if rec.latency.ratio is not None else math.nan,
            "seconds": sec,
            "seeded": rec.seeded is not None, "promoted_from": rec.promoted_from, "plan": plan_id(t.params),
        })
    return _resplit(run)


def plan_id(params: dict[str, Any]) -> str:
    """A trial's Plan, named by its Optuna params: the same params, the same id, in any study of
    one space (a knob a shaped space fixes is not a param, so rows that shape the space
    differently may name one Plan twice: ``accuracy_spread`` then pairs fewer fine-tunes)."""
    return hashlib.sha256(json.dumps(sorted(params.items()), default=str).encode()).hexdigest()[:12]


def search(study: optuna.Study, objective: Objective, config: SearchConfig, schedule: Schedule,
           log: Callable[[str], None], spread: bool = False) -> None:
    """The prepared study's trials, run by the code ``autocomp search`` runs them with
    (``runner.optimize``'s phases): the search, then promotions of the front it found;
    ``spread``: promoted in ``spread_order`` (the runner is told no teacher numbers, as for a
    study not made by autocomp), to measure the order against the default's."""
    from unittest import mock

    from autocomp.study import promotion, runner

    def spread_only(trials: Any, teacher: Any = None, limit: int | None = None) -> list:
        return promotion.promotable(trials, None, limit)

    with mock.patch.object(runner, "promotable", spread_only) if spread else contextlib.nullcontext():
        runner.run_phases(study, objective, config, schedule, None, log)


def benchmark(config: SearchConfig, samplers: Sequence[str] = DEFAULT_SAMPLERS, seeds: Sequence[int] = (0,),
              n_trials: int | None = None, baselines: Sequence[str] = BASELINES, storage: str | None = None,
              log: Callable[[str], None] = print) -> tuple[Teacher, list[Run]]:
    """Every sampler x seed and the baselines, on one teacher and one workbench.

    ``storage``: an Optuna URL to keep every study (named ``bench-MODEL-DATASET-SAMPLER-sSEED``)
    for ``autocomp report``/``export``; default in memory.
    """
    import torch

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    # One fine-tune thread unless the config says otherwise: on 2 shared cores the default two
    # threads made a 2 s digits fine-tune take anywhere from 1 to 50 s, which no table survives.
    config = replace(config, train_threads=config.train_threads or 1)
    torch.set_num_threads(config.train_threads)
    for label in samplers:
        variant_sampler(label, 0, 1)  # unknown names fail before any work
    n = config.n_trials if n_trials is None else n_trials
    space = load_space(config.space)
    teacher, data = prepare(config, log)
    check_fits(teacher, data)
    bench = TimedWorkbench(teacher, data, config.measure, config.device)
    if storage:
        from autocomp.study.storage import open_storage

        store = open_storage(storage, config.heartbeat)
    else:
        store = optuna.storages.InMemoryStorage()
    runs = []
    if baselines:
        # A baseline is measured to the end: without the accuracy constraint nothing stops it early.
        fixed = replace(space, constraints=replace(space.constraints, max_accuracy_drop=None))
        runs.append(run_study(bench, fixed, config, "baselines", None, len(baselines), store, baselines, log))
        log(f"baselines: {len(baselines)} fixed plans in {runs[-1].wall_s:.1f} s")
    for label in samplers:
        for seed in seeds:
            runs.append(run_study(bench, space, config, label, seed, n, store, log=log))
            r = runs[-1]
            promoted = sum(p["promoted_from"] is not None for p in r.points + r.replaced)
            log(f"{label} seed {seed}: {len(r.points) + len(r.replaced)}/{r.started} finished ({r.pruned} stopped "
                f"early, {r.failed} failed, {promoted} promotions) in {r.wall_s:.1f} s"
                + (f" (profile {r.profile_s:.1f} s)" if r.profiled else ""))
    lats = [p["teacher_latency_ms"] for r in runs for p in r.points if p["teacher_latency_ms"]]
    info = Teacher(bench.teacher_accuracy, bench.teacher_path.stat().st_size,
                   float(np.median(lats)) if lats else math.nan)
    return info, runs


# -- scoring -------------------------------------------------------------------------------------
def _matrix(points: list[dict[str, Any]]) -> np.ndarray:
    rows = [[p["accuracy"], p["size_bytes"], p["latency_ratio"]] for p in points]
    arr = np.asarray(rows, dtype=float).reshape(-1, 3)
    return arr[np.all(np.isfinite(arr), axis=1)]


def reference(teacher: Teacher, margin: float = 2.0) -> tuple[float, float, float]:
    """(teacher accuracy - margin, fp32 artifact bytes, latency ratio 1.0)."""
    return (teacher.accuracy - margin, float(teacher.size_bytes), 1.0)


def front_volume(points: list[dict[str, Any]], teacher: Teacher, objectives: int = 3) -> float:
    """Normalized hypervolume; ``objectives=2`` drops latency (accuracy and bytes only)."""
    raw = _matrix(points)
    if len(raw) == 0:
        return 0.0
    scaled, ref = to_minimization(raw, reference(teacher))
    return hypervolume(unique_front(scaled[:, :objectives]), ref[:objectives])


def dominated(point: dict[str, Any], front: list[dict[str, Any]], strict: bool = False) -> bool:
    """``point`` is no better than some front point in every objective and worse in one, where
    latency ratios within ``LATENCY_TIE`` of each other count as equal (timed in different
    rounds, a 1 % lead is not a result); ``strict``: every difference counts."""
    p = to_minimize([[point["accuracy"], point["size_bytes"], point["latency_ratio"]]])[0]
    return dominated_by(p, to_minimize(_matrix(front)), None if strict else (0.0, 0.0, LATENCY_TIE))


def early_volume(run: Run, teacher: Teacher, share: float = EARLY_SHARE) -> float:
    """HV of the run's first ``share`` of its trials (by number; at least one) over its final HV,
    in percent: how much of what it finds a run has found early. NaN when the final HV is 0."""
    final = front_volume(run.points, teacher)
    if not final or run.started == 0:
        return math.nan
    first = max(1, round(share * run.started))
    # The points as they stood then: a trial promoted later counts with its own values.
    early = [p for p in run.points + run.replaced if p.get("trial", math.inf) < first]
    return 100 * front_volume(early, teacher) / final


def run_scores(run: Run, teacher: Teacher, best_volume: float) -> dict[str, float]:
    pts = run.points
    volume = front_volume(pts, teacher)

    def within(drop: float) -> list[dict[str, Any]]:
        return [p for p in pts if p["accuracy"] >= teacher.accuracy - drop - 1e-9]

    small0, small05, small1 = within(0.0), within(0.5), within(1.0)
    return {
        "HV": volume,
        "HV@20%": early_volume(run, teacher) if run.started > 1 else math.nan,
        "regret": max(0.0, best_volume - volume),
        "HV acc+size": front_volume(pts, teacher, objectives=2),
        "x@0": teacher.size_bytes / min(p["size_bytes"] for p in small0) if small0 else math.nan,
        "x@0.5": teacher.size_bytes / min(p["size_bytes"] for p in small05) if small05 else math.nan,
        "x@1": teacher.size_bytes / min(p["size_bytes"] for p in small1) if small1 else math.nan,
        "lat@1": min(p["latency_ratio"] for p in small1) if small1 else math.nan,
        "trials/h": run.started / run.wall_s * 3600 if run.wall_s else math.nan,
        "profile %": 100 * run.profile_s / run.wall_s if run.wall_s and run.profiled else math.nan,
        "outside %": 100 * run.outside_share,
        "export %": 100 * run.export_s / run.wall_s if run.wall_s else math.nan,
        "reference %": 100 * run.reference_s / run.wall_s if run.wall_s else math.nan,
    }


def _median(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.median(finite) if finite else math.nan


def _or_teacher(values: list[float]) -> list[float]:
    """x@ and lat@1 per seed, where a seed with no such point ships the teacher: 1x, not left out."""
    return [1.0 if math.isnan(v) else v for v in values]


def summarize(teacher: Teacher, runs: list[Run], default: str = "tpe") -> dict[str, Any]:
    """The side-by-side table (one row per sampler, medians over seeds; one per baseline),
    the per-seed scores, and which uniform baselines each sampler's fronts dominate."""
    import pandas as pd

    pooled = [p for r in runs for p in r.points]
    best = front_volume(pooled, teacher)
    per_seed = []
    for r in runs:
        if r.label == "baselines":
            continue
        per_seed.append({"run": r.label, "seed": r.seed, "trials": r.started,
                         "finished": len(r.points) + len(r.replaced),
                         "stopped early": r.pruned, "failed": r.failed, "wall s": r.wall_s,
                         **run_scores(r, teacher, best)})
    seeds = pd.DataFrame(per_seed)
    rows = []
    labels = list(dict.fromkeys(s["run"] for s in per_seed))
    for label in labels:
        mine = seeds[seeds["run"] == label]
        row = {"run": label, "seeds": len(mine), "trials": int(mine["trials"].median())}
        for col in (c for c in COLUMNS[3:] if c != "regret/random"):
            values = mine[col].tolist()
            row[col] = _median(_or_teacher(values) if col.startswith("x@") or col == "lat@1" else values)
        rows.append(row)
    random_regret = next((r["regret"] for r in rows if r["run"] == "random"), math.nan)
    for row in rows:
        row["regret/random"] = row["regret"] / random_regret if random_regret and math.isfinite(random_regret) \
            else math.nan
    dominance, notes = [], []
    for r in runs:
        if r.label != "baselines":
            continue
        notes += [f"baseline {lost}" for lost in r.lost]
        for p in r.points:
            sec = p["seconds"]
            single = Run(p["baseline"], None, [p], started=1, wall_s=sec.get("total", math.nan),
                         finetune_s=sec.get("finetune", 0.0), export_s=sec.get("export", 0.0),
                         measure_s=sec.get("measure", 0.0), reference_s=sec.get("reference", 0.0))
            s = run_scores(single, teacher, best)
            rows.append({"run": f"baseline {p['baseline']}", "seeds": math.nan, "trials": 1,
                         **{c: s[c] for c in COLUMNS[3:] if c in s}, "regret/random": math.nan,
                         "profile %": math.nan})
            if p["baseline"] not in UNIFORM_BASELINES:
                continue
            entry = {"baseline": p["baseline"], "accuracy": p["accuracy"], "drop": teacher.accuracy - p["accuracy"],
                     "x smaller": teacher.size_bytes / p["size_bytes"], "latency x": p["latency_ratio"]}
            for label in labels:
                fronts = [q.points for q in runs if q.label == label]
                entry[f"dominated by {label}"] = f"{sum(dominated(p, f) for f in fronts)}/{len(fronts)}"
            entry["dominated by pooled search"] = dominated(p, [q for q in pooled if not q["baseline"]])
            dominance.append(entry)
    table = pd.DataFrame(rows, columns=COLUMNS)
    return {"table": table, "per_seed": seeds, "dominance": pd.DataFrame(dominance), "best_hv": best,
            "default": default, "notes": notes, "findings": findings(teacher, runs, seeds, default)}


def findings(teacher: Teacher, runs: list[Run], per_seed: Any, default: str) -> list[str]:
    """Issue 21's done-means as sentences: the default search's fronts against the uniform
    baselines, each search's lat@1 against ``channels50``, and the full search against the
    profile's allocation alone."""
    fixed = {p["baseline"]: p for r in runs if r.label == "baselines" for p in r.points}
    fronts = [r.points for r in runs if r.label == default]
    lines = []
    if fronts and (uniform := [b for b in UNIFORM_BASELINES if b in fixed]):
        counts = ", ".join(f"{b} {sum(dominated(fixed[b], f) for f in fronts)}/{len(fronts)} "
                           f"({sum(dominated(fixed[b], f, strict=True) for f in fronts)})" for b in uniform)
        lines.append(f"{default}'s front dominates the uniform baselines in k of n seeds, latency ratios within "
                     f"{LATENCY_TIE:.0%} counting as equal (in brackets: every difference counting): {counts}")
    if "channels50" in fixed:
        lines.append(channels_line(teacher, fixed["channels50"], per_seed))
    if default != PROFILE_ONLY and (only := [r for r in runs if r.label == PROFILE_ONLY]) and fronts:
        lines.append(profile_line(teacher, [p for f in fronts for p in f],
                                  [{**p, "seed": r.seed} for r in only for p in r.points], per_seed, default,
                                  accuracy_spread(runs, teacher.accuracy)))
    return lines


def channels_line(teacher: Teacher, channels: dict[str, Any], per_seed: Any) -> str:
    """Per search row: in how many seeds the fastest point within 1 point is at least as fast as
    the ``channels50`` baseline (which may itself be more than 1 point down: its drop is shown)."""
    limit = channels["latency_ratio"]
    parts = []
    for label in dict.fromkeys(per_seed["run"]) if not per_seed.empty else ():
        lat = per_seed[per_seed["run"] == label]["lat@1"].tolist()
        faster = sum(math.isfinite(v) and v <= limit * (1 + LATENCY_TIE) for v in lat)
        parts.append(f"{label} {faster}/{len(lat)} (median {_cell('lat@1', _median(_or_teacher(lat)))}x)")
    drop = teacher.accuracy - channels["accuracy"]
    return (f"lat@1 vs channels50 ({limit:.2f}x at {drop:.1f} points down): the fastest point within 1 point is "
            f"at least as fast (within {LATENCY_TIE:.0%}) in k of n seeds: " + (", ".join(parts) or "no search run"))


@dataclass(frozen=True)
class Spread:
    """How far two brief fine-tunes of one Plan at different seeds land apart (``accuracy_spread``)."""

    tie: float  # points: the ``SPREAD_QUANTILE`` of the pairs' accuracy differences
    pairs: int
    plans: int


def accuracy_spread(runs: list[Run], teacher_accuracy: float) -> Spread | None:
    """The brief fine-tune's own accuracy spread, from every study of the benchmark: each Plan
    fine-tuned more than once (searched, seeded or profile-only, in any row; promotions and the
    fixed baselines left out) whose fine-tunes are all within ``SPREAD_WITHIN`` of the teacher,
    and each pair of its fine-tunes; the tie is the ``SPREAD_QUANTILE`` of their accuracy
    differences, one of the differences seen. One Plan at one seed gives one accuracy (the
    fine-tune is seeded; a second, equal, is the same fine-tune and not paired). None with
    fewer than ``MIN_PAIRS`` pairs, or points saved without their plan."""
    plans: dict[str, set[tuple[int, float]]] = {}
    for r in runs:
        for p in r.points + r.replaced:
            if r.seed is not None and p.get("plan") and p.get("promoted_from") is None:
                plans.setdefault(p["plan"], set()).add((r.seed, p["accuracy"]))
    repeated = [[acc for _, acc in v] for v in plans.values()
                if len(v) > 1 and min(acc for _, acc in v) >= teacher_accuracy - SPREAD_WITHIN]
    diffs = [abs(a - b) for acc in repeated for i, a in enumerate(acc) for b in acc[i + 1:]]
    if len(diffs) < MIN_PAIRS:
        return None
    return Spread(float(np.quantile(diffs, SPREAD_QUANTILE, method="higher")), len(diffs), len(repeated))


def covered(point: dict[str, Any], front: list[dict[str, Any]], tie: float = 0.0) -> str:
    """``dominated`` / ``matched`` (a front point of equal accuracy and bytes, its latency ratio
    within ``LATENCY_TIE``) / ``spread`` (a front point as small and as fast, at most ``tie`` > 0
    points less accurate: not behind by more than the fine-tune's spread) / ``no``."""
    if dominated(point, front):
        return "dominated"
    acc, size, lat = point["accuracy"], point["size_bytes"], point["latency_ratio"]
    same = [q for q in front if q["accuracy"] == acc and q["size_bytes"] == size]
    if any(abs(q["latency_ratio"] - lat) <= LATENCY_TIE * lat for q in same):
        return "matched"
    near = _as_small_and_fast(point, front)
    return "spread" if tie > 0 and near and max(q["accuracy"] for q in near) >= acc - tie - 1e-9 else "no"


def _as_small_and_fast(point: dict[str, Any], front: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [q for q in front if q["size_bytes"] <= point["size_bytes"]
            and q["latency_ratio"] <= point["latency_ratio"] * (1 + LATENCY_TIE)]


def shortfall(point: dict[str, Any], front: list[dict[str, Any]]) -> str:
    """How far ``front`` falls short of a point it does not cover: the accuracy of its most accurate
    point as small and as fast (latency within ``LATENCY_TIE``), or that it has none."""
    near = _as_small_and_fast(point, front)
    if not near:
        return "the search has no point as small and as fast"
    best = max(near, key=lambda q: q["accuracy"])
    return (f"the search's most accurate as small and as fast: {best['accuracy']:.2f} % "
            f"({best['accuracy'] - point['accuracy']:+.2f} point)")


def profile_line(teacher: Teacher, full: list[dict[str, Any]], only: list[dict[str, Any]], per_seed: Any,
                 default: str, spread: Spread | None = None) -> str:
    """Does the full search's front, pooled over its seeds, dominate or match the points of the
    profile's allocation alone (pooled over its seeds), and by how much HV; the points it covers
    only within the fine-tune's accuracy ``spread``, and those it does not cover, each by its seed
    and trial, and by how much (``shortfall``)."""
    verdicts = [covered(p, full, spread.tie if spread else 0.0) for p in only]

    def named(verdict: str) -> str:
        return "; ".join(f"seed {p.get('seed')} trial {p['trial']} ({p['accuracy']:.2f} %, {p['size_bytes']:,} B, "
                         f"{p['latency_ratio']:.2f}x; {shortfall(p, full)})"
                         for p, v in zip(only, verdicts, strict=True) if v == verdict)

    within = (f"; {verdicts.count('spread')} not behind by more than the fine-tune's accuracy spread "
              f"({spread.tie:.2f} point: the {SPREAD_QUANTILE:.0%} quantile of {spread.pairs} differences between "
              f"fine-tunes of the {spread.plans} plans within {SPREAD_WITHIN:g} point run at more than one seed)"
              f"{': ' + named('spread') if verdicts.count('spread') else ''}"
              if spread else f"; no accuracy spread measured (fewer than {MIN_PAIRS} pairs of one plan's fine-tunes, "
              "or points saved without their plan): every difference counts")
    left = named("no")
    hv_full, hv_only = front_volume(full, teacher), front_volume(only, teacher)
    two_full, two_only = front_volume(full, teacher, 2), front_volume(only, teacher, 2)
    med = {label: _median(per_seed[per_seed["run"] == label]["HV"].tolist()) for label in (default, PROFILE_ONLY)}
    return (f"profile-only vs full search: {default}'s pooled front dominates {verdicts.count('dominated')} and "
            f"matches {verdicts.count('matched')} of the {len(only)} points of `{PROFILE_ONLY}`{within} "
            f"({verdicts.count('no')} neither{': ' + left if left else ''}); pooled HV {hv_full:.4f} vs {hv_only:.4f} "
            f"(difference {hv_full - hv_only:+.4f}; HV acc+size {two_full:.4f} vs {two_only:.4f}, "
            f"{two_full - two_only:+.4f}); median HV over seeds {med[default]:.4f} vs {med[PROFILE_ONLY]:.4f}")


# -- printing ------------------------------------------------------------------------------------
def _cell(col: str, v: Any) -> str:
    if isinstance(v, str):
        return v
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if col in ("seeds", "trials", "seed", "finished", "stopped early", "failed"):
        return str(int(v))
    if col == "HV@20%":
        return f"{v:.0f}"
    if col in ("HV", "regret", "HV acc+size"):
        return f"{v:.4f}"
    if col in ("x@0", "x@0.5", "x@1", "x smaller"):
        return f"{v:.1f}x"
    if col in ("lat@1", "latency x", "regret/random"):
        return f"{v:.2f}"
    if col in ("trials/h", "wall s"):
        return f"{v:.0f}"
    return f"{v:.1f}" if isinstance(v, float) else str(v)


def markdown(frame: Any) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for rec in frame.to_dict("records"):
        lines.append("| " + " | ".join(_cell(c, rec[c]) for c in cols) + " |")
    return "\n".join(lines)


def report_text(config: SearchConfig, teacher: Teacher, summary: dict[str, Any], command: str, wall_s: float,
                rescored: bool = False) -> str:
    """The results as markdown; ``rescored``: scored again from a saved run, ``wall_s`` the sum of
    its studies' own wall times (the teacher's training and the gaps between studies left out)."""
    per_seed = summary["per_seed"]
    lines = [
        f"## {config.name}: {config.model} on {config.dataset} ({config.space} space)",
        "",
        f"Command: `{command}`",
        "",
        f"Teacher: {teacher.accuracy:.2f} % top-1, fp32 artifact {teacher.size_bytes:,} bytes, "
        f"{teacher.latency_ms:.4f} ms (ONNX Runtime, batch {config.batch}, {config.threads} thread(s); median of "
        f"the paired timings). HV reference: ({teacher.accuracy - 2:.2f} %, {teacher.size_bytes:,} B, 1.0x latency); "
        f"pooled best HV {summary['best_hv']:.4f}. "
        + (f"Scored again from a saved run: its studies' wall time, summed, {wall_s / 60:.1f} min." if rescored
           else f"Wall time {wall_s / 60:.1f} min."),
        "",
        markdown(summary["table"]),
        "",
        *(f"- {note}" for note in summary["notes"]),
    ]
    if summary["best_hv"] == 0.0:
        lines.append("- No artifact was smaller, faster and within 2 points of the teacher at once: the 3-objective "
                     "HV is 0 for every run; compare `HV acc+size`.")
    if lines[-1] != "":
        lines.append("")
    if summary.get("findings"):
        lines += [*(f"- {line}" for line in summary["findings"]), ""]
    if not summary["dominance"].empty:
        lines += ["Uniform baselines, and in how many seeds each search's front dominates them:", "",
                  markdown(summary["dominance"]), ""]
    if not per_seed.empty:
        lines += ["Per seed:", "", markdown(per_seed), ""]
    return "\n".join(lines)


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["train_samples=12000", "space=uniform"]`` -> typed values (YAML scalars)."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise AutocompError(f"--set {item!r}: expected KEY=VALUE")
        out[key.strip().replace("-", "_")] = yaml.safe_load(value)
    return out


def load_runs(path: Path) -> tuple[SearchConfig, Teacher, list[Run]]:
    """A finished benchmark's config, teacher and runs, from the ``runs.json`` it wrote; each run's
    points split again by today's rule (``pareto.left_out``: a run saved before 2026-12-07 kept
    every finished promotion in place of its original)."""
    data = json.loads(path.read_text())
    config, runs = SearchConfig(**data["config"]), [_resplit(Run(**r)) for r in data["runs"]]
    return config, Teacher(**data["teacher"]), _with_plans(path.parent, config, runs)


def _with_plans(folder: Path, config: SearchConfig, runs: list[Run]) -> list[Run]:
    """Points saved before their ``plan`` was (2026-12-07) get it from the studies in FOLDER.db,
    where the benchmark kept them (``--storage sqlite:///FOLDER.db``); without it they stay as saved."""
    db = Path(f"{folder}.db")
    if not db.is_file() or all(p.get("plan") for r in runs for p in r.points + r.replaced):
        return runs
    for run in runs:
        try:
            study = optuna.load_study(study_name=_study_name(config, run.label, run.seed), storage=f"sqlite:///{db}")
        except (KeyError, RuntimeError):  # not this benchmark's study, or a storage this Optuna cannot read
            continue
        trials = {t.number: t for t in study.get_trials(deepcopy=False)}
        for p in run.points + run.replaced:
            t = trials.get(p["trial"])
            if t is not None and t.values and t.values[0] == p["accuracy"]:  # the trial saved, not another's
                p.setdefault("plan", plan_id(t.params))
    return runs


def _resplit(run: Run) -> Run:
    """``run`` with its points split by ``pareto.left_out``, as ``autocomp search``'s front takes
    them (every finished trial is scored, feasible or not, so each counts as able to stand)."""
    every = sorted(run.points + run.replaced, key=lambda p: p["trial"])
    out = left_out(Member(p["trial"], p.get("promoted_from"), True, p["accuracy"]) for p in every)
    return replace(run, points=[p for p in every if p["trial"] not in out],
                   replaced=[p for p in every if p["trial"] in out])


def promotions(folder: Path, label: str) -> Iterator[tuple[int, list[optuna.trial.FrozenTrial],
                                                           optuna.trial.FrozenTrial, TrialRecord]]:
    """Every finished promotion of row ``label`` in a benchmark's ``--out`` folder (its studies in
    FOLDER.db): ``(seed, the study's trials, the promotion, its record)``."""
    config, _, runs = load_runs(folder / "runs.json")
    for run in (r for r in runs if r.label == label):
        study = optuna.load_study(study_name=_study_name(config, label, run.seed), storage=f"sqlite:///{folder}.db")
        trials = study.get_trials(deepcopy=False)
        for t in trials:
            record = read_trial(t)
            if record.promoted_from is not None and "accuracy" in record.metrics:
                yield run.seed, trials, t, record


def load_config(path: str, overrides: dict[str, Any]) -> SearchConfig:
    settings = read_config_file(path)
    settings.update({k: v for k, v in overrides.items() if v is not None})
    return SearchConfig(**settings)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="experiments/NAME.yaml (SearchConfig keys); default experiments/default.yaml")
    parser.add_argument("--trials", type=int, help="trials per run (default: the config's n_trials)")
    parser.add_argument("--seeds", help="comma list of seeds (default 0,1,2,3,4)")
    parser.add_argument("--samplers", help=f"comma list of rows (default {','.join(DEFAULT_SAMPLERS)}): tpe = "
                        "autocomp search's default (profile, seeded plans, promotion), random = plain random "
                        "search, profile = the seeded plans alone; also nsga2, NAME-noprofile (tpe-noprofile), "
                        "NAME-spread, tpe-indep, tpe-sN, nsga2-pN, gp")
    parser.add_argument("--baselines", default=",".join(BASELINES), help="comma list of fixed plans run once "
                        f"(default all: {','.join(BASELINES)}); '' for none")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key (repeatable), e.g. --set train_samples=12000")
    parser.add_argument("--storage", help="keep every study in this Optuna storage URL (default: in memory)")
    parser.add_argument("--out", help="directory for results.md and runs.json")
    parser.add_argument("--rescore", metavar="RUNS_JSON", help="score a finished benchmark again from its "
                        "runs.json (no trial runs; the rows and seeds are the file's)")
    parser.add_argument("--quick", action="store_true", help="smoke run: default config, 20 trials, seeds 0,1, "
                        "tpe, random and profile (about 2 minutes on 2 cores)")
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
    command = "python experiments/benchmark.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.rescore:
        try:
            config, teacher, runs = load_runs(Path(args.rescore))
        except (OSError, ValueError, TypeError, KeyError) as exc:
            print(f"benchmark: error: cannot read {args.rescore}: {exc}", file=sys.stderr)
            return 2
        labels = [r.label for r in runs if r.label != "baselines"]
        text = report_text(config, teacher, summarize(teacher, runs, default=labels[0] if labels else "tpe"),
                           command.strip(), sum(r.wall_s for r in runs), rescored=True)
        print(text)
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / "results.md").write_text(text + "\n")
        return 0
    try:
        config = load_config(args.config or str(HERE / "default.yaml"), parse_overrides(args.set))
        seeds = [int(s) for s in (args.seeds or "0,1,2,3,4").split(",") if s.strip()]
        samplers = [s.strip() for s in (args.samplers or ",".join(DEFAULT_SAMPLERS)).split(",") if s.strip()]
        baselines = [b.strip() for b in args.baselines.split(",") if b.strip()]
        for b in baselines:
            if b not in BASELINES:
                raise AutocompError(f"unknown baseline {b!r} (expected {', '.join(BASELINES)})")
        start = time.perf_counter()
        teacher, runs = benchmark(config, samplers, seeds, args.trials, baselines, args.storage,
                                  log=lambda s: print(s, file=sys.stderr, flush=True))
    except (AutocompError, ValueError) as exc:
        print(f"benchmark: error: {exc}", file=sys.stderr)
        return 2
    wall = time.perf_counter() - start
    summary = summarize(teacher, runs, default=samplers[0])
    text = report_text(config, teacher, summary, command.strip(), wall)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.md").write_text(text + "\n")
        (out / "runs.json").write_text(json.dumps({"teacher": asdict(teacher), "config": config.to_dict(),
                                                   "runs": [asdict(r) for r in runs]}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
