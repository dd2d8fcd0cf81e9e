"""``run_search``: the whole job behind ``autocomp search`` and ``autocomp.search``."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import optuna
import torch
from torch import nn

from autocomp.config import SearchConfig
from autocomp.data import Data, load_data
from autocomp.errors import TrialFailed
from autocomp.layers import output_layers
from autocomp.loading import source_digest
from autocomp.measure import MeasureConfig
from autocomp.models import check_fits, prepare_teacher, state_digest, weights_preprocess
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
    teacher = prepare_teacher(config.model, data, config.checkpoint, config.teacher_epochs, config.seed,
                              key, config.device, log, weights=config.weights, progress=progress)
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
    use_threads(config)
    space = space or load_space(config.space)
    probe_storage(config.storage_url)  # every check runs before anything is written
    bars = task_bar if progress else None
    if teacher is None or data is None:
        teacher, data = prepare(config, log, bars)
    check_fits(teacher, data)
    space.params(teacher, output_layers(teacher, data.example(1)))  # a space that cannot fit fails before any write
    storage = open_storage(config.storage_url, config.heartbeat)
    study, fresh = open_study(config, space, storage, state_digest(teacher), config.n_trials)
    fail_orphaned_trials(study, grace=3 * config.heartbeat)
    run_dir = config.directory
    run_dir.mkdir(parents=True, exist_ok=True)
    log(f"study {config.name!r} ({'new' if fresh else f'resumed with {len(study.trials)} trials'}) "
        f"in {config.storage_url}")
    # Latency and accuracy are measured on the deployment runtime (ONNX Runtime on CPU), whatever
    # device fine-tunes.
    bench = Workbench(teacher, data, MeasureConfig(config.batch, config.threads), config.device, progress=bars)
    record_workbench(study, bench)
    artifact_dir = run_dir / "artifacts" if config.keep_artifacts else None
    if artifact_dir:
        artifact_dir.mkdir(parents=True, exist_ok=True)
    objective = Objective(bench, space, config, artifact_dir)
    bar = _Bar(config.n_trials) if progress and config.n_trials else None
    bench.on_progress = bar.step if bar else None
    bench.val.progress = bar.evaluating if bar else None
    interrupted = False
    try:
        study.optimize(objective, n_trials=config.n_trials, timeout=config.timeout,
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
    done = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    log(("interrupted: " if interrupted else "") + f"{done} complete trials of {len(study.trials)} in study "
        f"{config.name!r}")
    log(_front_table(study))
    log(f"report: {paths['html']}\ntrials table: {paths['csv']}")
    log(recommend_text(study, config.storage_url, **limits))
    if interrupted:
        raise KeyboardInterrupt
    return study


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
