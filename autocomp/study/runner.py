"""``optimize``: open or resume the study and run its trials (``autocomp.run_search`` adds the report)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
from torch import nn

from autocomp.config import SearchConfig
from autocomp.data import Data
from autocomp.errors import AutocompError, StorageFault, TrialFailed
from autocomp.models.adapters import explicit_copy
from autocomp.models.layers import compute_layers, output_layers
from autocomp.models.zoo import check_fits
from autocomp.pipeline.sanity import teacher_warnings
from autocomp.pipeline.setup import prepare, require_runtime, task_bar, use_threads
from autocomp.pipeline.workbench import Workbench
from autocomp.study.create import check_resume, open_study, record_workbench
from autocomp.study.failures import LogFile, common_reasons
from autocomp.study.objective import Objective
from autocomp.study.progress import ProgressLine
from autocomp.study.promotion import (
    PREPARE_SHARE,
    Schedule,
    defer_queued,
    enqueue_promotion,
    promotable,
    promoted_or_queued,
    requeue,
)
from autocomp.study.records import (
    INTERRUPTED,
    failure_attrs,
    read_study,
    read_trial,
    trial_baseline,
    trial_failure,
    write_failure,
)
from autocomp.study.recovery import fail_dead_trials
from autocomp.study.space import SearchSpace, load_space
from autocomp.study.storage import fail_running_trial, open_storage, probe_storage, storage_file


@dataclass(frozen=True)
class SearchRun:
    """What ``optimize`` leaves for the report and the console."""

    study: optuna.Study
    interrupted: bool
    teacher_accuracy: float
    chance_accuracy: float
    log_path: Path


def optimize(config: SearchConfig, teacher: nn.Module | None = None, data: Data | None = None,
             space: SearchSpace | None = None, log: Callable[[str], None] = print,
             progress: bool = True) -> SearchRun:
    """Create or resume the study and run ``config.n_trials`` more trials: ``config.promote`` of
    them re-run the front's plans with a longer fine-tune after the search, and with
    ``config.timeout`` the profile, the search and the promotions end within it (``run_phases``).

    Ctrl-C stops after marking the trial in flight failed; finished trials are kept and the
    run comes back with ``interrupted`` set (``autocomp.run_search`` then writes the report).
    """
    # Failed trials are reported by the progress line and the trials table, not as log tracebacks.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    measure = config.measure
    require_runtime(measure)  # a runtime that is not installed stops here, before anything is written
    use_threads(config)
    space = space or load_space(config.space)
    # Every check runs before anything is written. The default storage lives in the run
    # directory, made below; a --storage file's folder must already exist.
    probe_storage(config.storage_url, make_folder=config.storage is None)
    storage = _resumable_storage(config, space)
    bars = task_bar if progress else None
    if teacher is None or data is None:
        teacher, data = prepare(config, log, bars)
    teacher = explicit_copy(teacher)  # a model given in Python: attention projections made reachable
    check_fits(teacher, data)
    outputs = output_layers(teacher, data.example(1))
    check_dimensions(space, teacher, outputs, config.allow_empty_space, log)  # also: a space that cannot fit
    run_dir = config.directory
    if config.storage is None:
        run_dir.mkdir(parents=True, exist_ok=True)
    storage = storage or open_storage(config.storage_url, config.heartbeat)
    study, fresh = open_study(config, space, storage, teacher, config.n_trials, outputs)
    run_dir.mkdir(parents=True, exist_ok=True)
    log(f"study {config.name!r} ({'new' if fresh else f'resumed with {len(study.trials)} trials'}) "
        f"in {config.storage_url}")
    # Latency and accuracy are measured on the deployment runtime (--runtime), whatever device fine-tunes.
    bench = Workbench(teacher, data, measure, config.device, progress=bars)
    record_workbench(study, bench)
    chance = bench.chance_accuracy
    for line in teacher_warnings(bench.teacher_accuracy, chance):
        log(f"warning: {line}")
    artifact_dir = run_dir / "artifacts" if config.keep_artifacts else None
    if artifact_dir:
        artifact_dir.mkdir(parents=True, exist_ok=True)
    objective = Objective(bench, space, config, artifact_dir, creator=fresh)
    # --timeout counts from here. The profile, the seeded plans and the teacher's reference come
    # before the first trial (a joining worker waits for the creator's): no trial's time includes them.
    schedule = Schedule.start(config.n_trials, config.promote, config.promote_factor, config.timeout)
    objective.prepare(study, schedule.prepare_until)
    schedule.begin_trials()
    _log_profile(study, fresh, log)
    bar = ProgressLine(config.n_trials) if progress and config.n_trials else None
    bench.on_progress = bar.step if bar else None
    bench.val.progress = bar.evaluating if bar else None
    logfile = LogFile(run_dir)
    interrupted = _run_trials(study, objective, config, schedule, bar, log, logfile)
    return SearchRun(study, interrupted, bench.teacher_accuracy, chance, logfile.path)


def _log_profile(study: optuna.Study, fresh: bool, log: Callable[[str], None]) -> None:
    """One line on what the profile measured, dropped and seeded (a new study only)."""
    profile = read_study(study).profile
    if not fresh or profile is None:
        return
    seeded = sum(bool(read_trial(t).seeded) for t in study.get_trials(deepcopy=False))
    layers = len({e["layer"] for e in profile["entries"]})
    check = profile.get("seed_check", {})
    checked = check.get("candidates")
    log(f"per-layer profile: {len(profile['entries'])} values on {layers} layers in {profile['seconds']:.1f} s, "
        f"{len(profile.get('dropped', []))} dropped from the space, {seeded} seeded plan{'s' * (seeded != 1)} queued"
        + (f" (chosen among {checked} candidates measured on their files)" if checked else "") + " (docs/search.md)")
    late = []
    if profile.get("unprofiled"):
        late.append(f"{len(profile['unprofiled'])} layer knobs not profiled (kept in the space as written)")
    if check.get("predicted_only"):
        late.append("the seeds are the profile's predictions, not checked on their files")
    elif check.get("unchecked"):
        late.append(f"{check['unchecked']} seed candidates not measured")
    if late:
        log(f"the profile's share of --timeout ({PREPARE_SHARE:.0%}) ran out: {'; '.join(late)}")


def _run_trials(study: optuna.Study, objective: Objective, config: SearchConfig, schedule: Schedule,
                bar: ProgressLine | None, log: Callable[[str], None], logfile: LogFile) -> bool:
    """Run the trials (``run_phases``); True when Ctrl-C stopped them."""
    try:
        with logfile:  # failed trials' tracebacks go there, not to the console
            run_phases(study, objective, config, schedule, bar, log)
    except KeyboardInterrupt:
        return True
    finally:
        if bar:
            bar.close()
    return False


def run_phases(study: optuna.Study, objective: Objective, config: SearchConfig, schedule: Schedule,
               bar: ProgressLine | None, log: Callable[[str], None]) -> None:
    """The search's trials, then promotions of the front it found (``autocomp.study.promotion``):
    each phase stops where the schedule says the next trial would not fit ``--timeout``.

    Promotion trials the front has no use for (fewer points to promote than trials, or, in a run
    without a timeout, plans still queued: baselines and seeds a short run did not reach, which
    Optuna would run ahead of any promotion) search instead, first. Under a timeout those plans
    wait instead (``defer_queued``) and are queued again after the promotions.
    """
    run = _marks_interrupts(objective)
    # After every trial, fail (with the reason) and retry the trials of workers that died meanwhile.
    callbacks = [_fails_dead_trials(3 * config.heartbeat), _paced(schedule, bar)] + ([bar] if bar else [])
    _search(study, run, schedule, callbacks, schedule.n_search)
    extra = schedule.give_back(study.get_trials(deepcopy=False))
    if extra and not schedule.search_over(study.get_trials(deepcopy=False)):
        _search(study, run, schedule, callbacks, extra)
    _promote(study, run, schedule, callbacks, bar, log)


def _promote(study: optuna.Study, run: Callable[[optuna.Trial], tuple[float, float, float]], schedule: Schedule,
             callbacks: list[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]], bar: ProgressLine | None,
             log: Callable[[str], None]) -> None:
    """Promote up to ``schedule.n_promote`` front trials in ``promotable``'s order, one at a time:
    each queued only when it is expected to end before the timeout (the estimate is the measured
    seconds of the promotions before it), so none is left queued when time is up, and one
    another worker promoted meanwhile is skipped."""
    order = promotable(study.get_trials(deepcopy=False), read_study(study).teacher, schedule.n_promote)
    schedule.phase, schedule.queued = "promote", len(order)
    if not order:
        return
    numbers = ", ".join(f"#{t.number}" for t in order)
    log(f"promoting {len(order)} front trial{'s' if len(order) > 1 else ''} ({numbers})"
        f"{' as the timeout allows' if schedule.deadline is not None else ''}: the same plans, "
        f"{schedule.factor}x the fine-tune steps")
    if bar:
        bar.set_phase("promote", total=bar.tqdm.n + len(order))
    deferred: list = []
    try:
        for t in order:
            trials = study.get_trials(deepcopy=False)
            if t.number in promoted_or_queued(trials):
                schedule.queued -= 1
                continue
            if not schedule.promotions_that_fit(trials, 1):
                break
            if bar:
                bar.set_end(schedule.expected_end(trials))
            if schedule.deadline is not None:  # seeds the search did not reach would run ahead of it
                deferred += defer_queued(study)
            enqueue_promotion(study, t)
            study.optimize(run, n_trials=1, catch=(TrialFailed, MemoryError), callbacks=callbacks,
                           gc_after_trial=False)
    finally:
        requeue(study, deferred)
    if deferred:
        log(f"{len(deferred)} queued plan{'s' * (len(deferred) != 1)} (seeds or baselines the search did not reach) "
            "waited for the promotions and are queued again for the next run")


def _search(study: optuna.Study, run: Callable[[optuna.Trial], tuple[float, float, float]], schedule: Schedule,
            callbacks: list[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]], n: int) -> None:
    """Up to ``n`` search trials, none once the timeout is over."""
    left = schedule.seconds_left()
    if n and (left is None or left > 0):
        study.optimize(run, n_trials=n, timeout=left, catch=(TrialFailed, MemoryError), callbacks=callbacks,
                       gc_after_trial=False)


def _paced(schedule: Schedule, bar: ProgressLine | None) -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None]:
    """Stop the phase when the next trial would not fit the timeout; update the expected end."""

    def callback(study: optuna.Study, _: optuna.trial.FrozenTrial) -> None:
        trials = study.get_trials(deepcopy=False)
        if schedule.after_trial(trials):
            study.stop()
        if bar:
            bar.set_end(schedule.expected_end(trials))

    return callback


def check_dimensions(space: SearchSpace, teacher: nn.Module, outputs: frozenset[str], allow_empty: bool,
                     log: Callable[[str], None] = print) -> list[str]:
    """The space's searched dimensions on ``teacher``; refuse none (every trial would be the same
    plan, or the teacher itself) unless ``allow_empty``, then warn.

    Example::

        check_dimensions(load_space("default"), model, frozenset({"fc"}), allow_empty=False)
    """
    dims = space.dimensions(teacher, outputs)
    if dims:
        return dims
    if not space.assignments(teacher):
        layers = [f"{name} ({type(m).__name__})" for name, m in compute_layers(teacher).items()]
        shown = ", ".join(layers[:6]) + (f" and {len(layers) - 6} more" if len(layers) > 6 else "") or "none"
        problem = f"no rule of search space {space.source} hits a layer of the model (its layers: {shown})"
    else:
        problem = f"search space {space.source} has 0 searched dimensions on this model (every knob is fixed)"
    if not allow_empty:
        raise AutocompError(f"{problem}; see `autocomp spaces check`, or pass --allow-empty-space to run anyway")
    log(f"warning: {problem}; every trial runs the same plan")
    return dims


def _resumable_storage(config: SearchConfig, space: SearchSpace) -> optuna.storages.BaseStorage | None:
    """The storage, opened when it may already hold the study (a server, or a file that exists),
    and a study there resumed with other settings refused: before the teacher is trained
    (minutes of work). None for a file not made yet (opening would create it before anything
    is checked)."""
    path = storage_file(config.storage_url)
    if path is not None and not path.is_file():
        return None
    storage = open_storage(config.storage_url, config.heartbeat)
    check_resume(config, space, storage)
    return storage


def _fails_dead_trials(grace: float) -> Callable[[optuna.Study, optuna.trial.FrozenTrial], None]:
    def callback(study: optuna.Study, _: optuna.trial.FrozenTrial) -> None:
        fail_dead_trials(study, grace)

    return callback


def _marks_interrupts(objective: Objective) -> Callable[[optuna.Trial], tuple[float, float, float]]:
    """The objective, recording "interrupted" as the reason of a trial Ctrl-C stops (Optuna then
    fails it; a reason cannot be added to a finished trial), and a reason for anything else
    that would end a trial FAIL without one: another BaseException, a value that is not finite."""

    def run(trial: optuna.Trial) -> tuple[float, float, float]:
        try:
            values = objective(trial)
        except KeyboardInterrupt:
            write_failure(trial, INTERRUPTED)
            raise
        except Exception:  # Objective recorded the reason
            raise
        except BaseException as exc:  # StorageFault, SystemExit ...: Optuna leaves the trial RUNNING
            reason = str(exc) if isinstance(exc, StorageFault) else f"stopped: {type(exc).__name__}"
            with contextlib.suppress(Exception):  # a storage that refuses writes: the next resume fails it
                fail_running_trial(trial.study, trial, failure_attrs(reason))
            raise
        if not all(math.isfinite(v) for v in values):  # Optuna would fail it with no reason
            write_failure(trial, f"an objective value is not finite: {values}")
        return values

    return run


def summary(study: optuna.Study, name: str, log_path: Path | None = None) -> str:
    """``12 trials in study 'x': 9 complete, 2 stopped early, 1 failed`` and the commonest reasons.

    Example::

        print(summary(study, "lenet5-mnist"))
    """
    state = optuna.trial.TrialState
    by_state = {s: [t for t in study.trials if t.state == s] for s in (state.COMPLETE, state.PRUNED, state.FAIL)}
    counts = (f"{len(by_state[state.COMPLETE])} complete, {len(by_state[state.PRUNED])} stopped early, "
              f"{len(by_state[state.FAIL])} failed")
    running = sum(t.state in (state.RUNNING, state.WAITING) for t in study.trials)
    lines = [f"{len(study.trials)} trials in study {name!r}: {counts}" + (f", {running} running or queued"
                                                                          if running else "")]
    for label, s in (("stopped early", state.PRUNED), ("failed", state.FAIL)):
        for reason, n in common_reasons(trial_failure(t) or "" for t in by_state[s]):
            lines.append(f"  {label} ({n}x): {reason}")
    if by_state[state.FAIL] and log_path is not None and log_path.is_file():
        lines.append(f"  tracebacks of failed trials: {log_path}")
    return "\n".join(lines)


def best_student(study: optuna.Study) -> float | None:
    """Best accuracy of a complete trial other than the teacher's own baseline."""
    accs = [t.values[0] for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and t.values
            and trial_baseline(t) != "teacher"]
    return max(accs) if accs else None
