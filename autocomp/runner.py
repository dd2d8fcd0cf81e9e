"""``run_search``: the whole job behind ``autocomp search`` and ``autocomp.search``."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import torch
from torch import nn

from autocomp.config import SearchConfig
from autocomp.data import Data, load_data
from autocomp.errors import AutocompError, TrialFailed
from autocomp.failures import LogFile, common_reasons
from autocomp.layers import compute_layers, output_layers
from autocomp.loading import source_digest
from autocomp.measure import MeasureConfig
from autocomp.methods.attention import explicit_copy
from autocomp.models import check_fits, prepare_teacher, weights_preprocess
from autocomp.sanity import teacher_warnings
from autocomp.space import SearchSpace, load_space
from autocomp.study import (
    Objective,
    fail_orphaned_trials,
    open_storage,
    open_study,
    pareto_trials,
    probe_storage,
    record_workbench,
)
from autocomp.trial import Workbench


def use_threads(config: SearchConfig) -> None:
    if config.train_threads:
        torch.set_num_threads(config.train_threads)


def require_runtime(measure: MeasureConfig) -> None:
    """One line and exit 2 when the measurement runtime cannot run here (not installed, no GPU,
    a precision it does not offer)."""
    from autocomp.runtimes import RuntimeOptions, require

    require(measure.runtime, RuntimeOptions(measure.threads, measure.device, measure.precision, measure.batch))


def prepare(config: SearchConfig, log: Callable[[str], None] = print, progress: Callable | None = None
            ) -> tuple[nn.Module, Data]:
    """Data and teacher for a config (teacher trained and cached on first use).

    ``progress(what, total)`` returns a task with ``update(n)`` and ``close()`` (``task_bar``).
    """
    use_threads(config)
    torch.manual_seed(config.seed)
    defaults = weights_preprocess(config.model, config.weights)
    data = load_data(config.data_spec, seed=config.seed, defaults=defaults, progress=progress)
    # Neither the worker count nor the validation subset changes what the teacher trains on.
    spec = {k: v for k, v in config.data_spec.__dict__.items() if k not in ("workers", "val_samples")}
    key = {"model": config.model, "source": source_digest(config.model), **spec, "n_train": data.n_train,
           "augment": data.augment}
    if config.model_kwargs:  # only when given, so the cache keys of earlier teachers still hold
        key["model_kwargs"] = config.model_kwargs
    teacher = prepare_teacher(config.model, data, config.checkpoint, config.teacher_epochs, config.seed,
                              key, config.device, log, model_kwargs=config.model_kwargs, weights=config.weights,
                              progress=progress)
    return teacher, data


def task_bar(what: str, total: int | None) -> object:
    """A progress task on stderr for ``prepare`` / ``Workbench``: ``update(n)``, ``close()``."""
    from tqdm import tqdm

    return tqdm(total=total, desc=what, unit="img" if "train" not in what else "step", file=sys.stderr,
                dynamic_ncols=True, leave=False, mininterval=0.5)


def run_search(config: SearchConfig, teacher: nn.Module | None = None, data: Data | None = None,
               space: SearchSpace | None = None, log: Callable[[str], None] = print,
               progress: bool = True) -> optuna.Study:
    """Create or resume the study, run ``config.n_trials`` more trials, write the report.

    Ctrl-C stops after marking the trial in flight failed; finished trials are kept and the
    report is still written.
    """
    # Failed trials are reported by the progress line and the trials table, not as log tracebacks.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    measure = MeasureConfig(config.batch, config.threads, config.device, runtime=config.runtime,
                            precision=config.precision)
    require_runtime(measure)  # a runtime that is not installed stops here, before anything is written
    use_threads(config)
    space = space or load_space(config.space)
    # Every check runs before anything is written. The default storage lives in the run
    # directory, made below; a --storage file's folder must already exist.
    probe_storage(config.storage_url, make_folder=config.storage is None)
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
    storage = open_storage(config.storage_url, config.heartbeat)
    study, fresh = open_study(config, space, storage, teacher, config.n_trials, outputs)
    fail_orphaned_trials(study, grace=3 * config.heartbeat)
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
    bar = _Bar(config.n_trials) if progress and config.n_trials else None
    bench.on_progress = bar.step if bar else None
    bench.val.progress = bar.evaluating if bar else None
    interrupted = False
    logfile = LogFile(run_dir)
    try:
        with logfile:  # failed trials' tracebacks go there, not to the console
            study.optimize(_marks_interrupts(objective), n_trials=config.n_trials, timeout=config.timeout,
                           catch=(TrialFailed, MemoryError), callbacks=[bar] if bar else [],
                           gc_after_trial=False)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if bar:
            bar.close()
    from autocomp.report import write_report  # deferred: pandas/plotly
    from autocomp.report.recommend import recommend_text

    # The space's accuracy constraint bounds the search (often generous, 5 points); what to ship
    # defaults to `autocomp report`'s 1 point unless the space asks for less.
    c = space.constraints
    limits = {"max_drop": min(1.0, c.max_accuracy_drop) if c.max_accuracy_drop is not None else 1.0,
              "max_size": c.max_size_bytes, "max_latency": c.max_latency_ms}
    paths = write_report(study, run_dir, storage=config.storage_url, **limits)
    log(("interrupted: " if interrupted else "") + summary(study, config.name, logfile.path))
    for line in teacher_warnings(bench.teacher_accuracy, chance, best_student(study)):
        log(f"warning: {line}")
    log(_front_table(study))
    log(f"report: {paths['html']}\ntrials table: {paths['csv']}")
    log(recommend_text(study, config.storage_url, **limits))
    if interrupted:
        raise KeyboardInterrupt
    return study


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


def _marks_interrupts(objective: Objective) -> Callable[[optuna.Trial], tuple[float, float, float]]:
    """The objective, recording "interrupted" as the reason of a trial Ctrl-C stops (Optuna then
    fails it; a reason cannot be added to a finished trial)."""

    def run(trial: optuna.Trial) -> tuple[float, float, float]:
        try:
            return objective(trial)
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", "interrupted")
            raise

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
        for reason, n in common_reasons(t.user_attrs.get("fail_reason", "") for t in by_state[s]):
            lines.append(f"  {label} ({n}x): {reason}")
    if by_state[state.FAIL] and log_path is not None and log_path.is_file():
        lines.append(f"  tracebacks of failed trials: {log_path}")
    return "\n".join(lines)


def best_student(study: optuna.Study) -> float | None:
    """Best accuracy of a complete trial other than the teacher's own baseline."""
    accs = [t.values[0] for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and t.values
            and t.user_attrs.get("baseline") != "teacher"]
    return max(accs) if accs else None


def _front_table(study: optuna.Study) -> str:
    from autocomp.report.frame import pareto_frame

    frame = pareto_frame(study)
    if frame.empty:
        return "Pareto front: no finished trials yet"
    return "Pareto front:\n" + frame.to_string(index=False)


class _Bar:
    """Trials done, elapsed time, ETA and the current front size, after every trial; during a
    trial, its fine-tune step and images/s."""

    def __init__(self, total: int) -> None:
        from tqdm import tqdm

        self.tqdm = tqdm(total=total, unit="trial", file=sys.stderr, dynamic_ncols=True,
                         bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]")
        self.last = ""
        self._shown = 0.0

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.tqdm.update(1)
        self.last = f"front {len(pareto_trials(study))}, last #{trial.number} {trial.state.name.lower()}"
        self.tqdm.set_postfix_str(self.last)

    def step(self, step: int, steps: int, images_per_s: float) -> None:
        """Fine-tune progress of the trial in flight (at most twice a second)."""
        now = time.monotonic()
        if step != steps and now - self._shown < 0.5:
            return
        self._shown = now
        done = f"{self.last}; " if self.last else ""
        self.tqdm.set_postfix_str(f"{done}fine-tune step {step}/{steps}, {images_per_s:.0f} img/s")

    def evaluating(self, done: int, total: int) -> None:
        """Accuracy of the trial's artifact, as it goes."""
        now = time.monotonic()
        if done != total and now - self._shown < 0.5:
            return
        self._shown = now
        self.tqdm.set_postfix_str(f"{self.last + '; ' if self.last else ''}evaluating {done}/{total}")

    def close(self) -> None:
        self.tqdm.close()


def search(model: nn.Module, train_data, val_data, space: str | SearchSpace = "default", n_trials: int = 50,  # noqa: ANN001
           **settings) -> optuna.Study:
    """Search compressions of a trained ``model`` in a few lines.

    ``train_data``/``val_data``: ``(x, y)`` tensors or map-style datasets of ``(x, y)``.
    Other settings are ``SearchConfig`` fields (``storage``, ``study_name``, ``seed`` ...).

    Example::

        study = autocomp.search(model, (x_train, y_train), (x_val, y_val), n_trials=30)
    """
    from autocomp.data import bundle_from

    data = bundle_from(train_data, val_data, settings.get("workers"))
    space_obj = space if isinstance(space, SearchSpace) else load_space(space)
    config = SearchConfig(model="python", dataset="python", n_trials=n_trials, space=space_obj.source, **settings)
    return run_search(config, teacher=model, data=data, space=space_obj, progress=False, log=lambda s: None)
