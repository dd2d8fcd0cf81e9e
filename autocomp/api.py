"""The jobs behind ``autocomp search`` and ``autocomp.search``: optimize, then the report and the console summary."""

from __future__ import annotations

from collections.abc import Callable

import optuna
from torch import nn

from autocomp.config import SearchConfig
from autocomp.data import Data, bundle_from
from autocomp.pipeline.sanity import teacher_warnings
from autocomp.report import write_report
from autocomp.report.frame import pareto_frame
from autocomp.report.recommend import recommend_text
from autocomp.study.runner import best_student, optimize, summary
from autocomp.study.space import SearchSpace, load_space


def run_search(config: SearchConfig, teacher: nn.Module | None = None, data: Data | None = None,
               space: SearchSpace | None = None, log: Callable[[str], None] = print,
               progress: bool = True) -> optuna.Study:
    """Create or resume the study, run ``config.n_trials`` more trials, write the report.

    Ctrl-C stops after marking the trial in flight failed; finished trials are kept and the
    report is still written, then the ``KeyboardInterrupt`` goes on.
    """
    space = space or load_space(config.space)
    run = optimize(config, teacher, data, space, log, progress)
    study = run.study
    # The space's accuracy constraint bounds the search (often generous, 5 points); what to ship
    # defaults to `autocomp report`'s 1 point unless the space asks for less.
    c = space.constraints
    limits = {"max_drop": min(1.0, c.max_accuracy_drop) if c.max_accuracy_drop is not None else 1.0,
              "max_size": c.max_size_bytes, "max_latency": c.max_latency_ms}
    paths = write_report(study, config.directory, storage=config.storage_url, **limits)
    log(("interrupted: " if run.interrupted else "") + summary(study, config.name, run.log_path))
    for line in teacher_warnings(run.teacher_accuracy, run.chance_accuracy, best_student(study)):
        log(f"warning: {line}")
    log(_front_table(study))
    log(f"report: {paths['html']}\ntrials table: {paths['csv']}")
    log(recommend_text(study, config.storage_url, **limits))
    if run.interrupted:
        raise KeyboardInterrupt
    return study


def _front_table(study: optuna.Study) -> str:
    frame = pareto_frame(study)
    if frame.empty:
        return "Pareto front: no finished trials yet"
    return "Pareto front:\n" + frame.to_string(index=False)


def search(model: nn.Module, train_data, val_data, space: str | SearchSpace = "default", n_trials: int = 50,  # noqa: ANN001
           **settings) -> optuna.Study:
    """Search compressions of a trained ``model`` in a few lines.

    ``train_data``/``val_data``: ``(x, y)`` tensors or map-style datasets of ``(x, y)``.
    Other settings are ``SearchConfig`` fields (``storage``, ``study_name``, ``seed`` ...).

    Example::

        study = autocomp.search(model, (x_train, y_train), (x_val, y_val), n_trials=30)
    """
    data = bundle_from(train_data, val_data, settings.get("workers"))
    space_obj = space if isinstance(space, SearchSpace) else load_space(space)
    config = SearchConfig(model="python", dataset="python", n_trials=n_trials, space=space_obj.source, **settings)
    return run_search(config, teacher=model, data=data, space=space_obj, progress=False, log=lambda s: None)
