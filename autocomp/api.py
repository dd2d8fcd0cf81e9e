"""The jobs behind ``autocomp search`` and ``autocomp.search``: optimize, then the report and the console summary."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from torch import nn

from autocomp.artifact.container import atomic_write
from autocomp.config import SearchConfig
from autocomp.data import Data, bundle_from
from autocomp.errors import AutocompError
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
    if config.measure_on:  # a device that cannot measure is refused before anything is written
        from autocomp.runtimes.remote import close_devices, open_device

        open_device(config.measure_on, config.runtime, config.measure.options)
    undo = claim_run_dir(config.directory, config.overwrite)
    try:
        run = optimize(config, teacher, data, space, log, progress)
    except AutocompError:  # refused: the run directory is left as it was
        undo()
        raise
    finally:
        if config.measure_on:
            close_devices()  # the device's private folder goes with the run
    study = run.study
    limits = ship_limits(space)
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


def ship_limits(space: SearchSpace) -> dict[str, Any]:
    """The limits ``autocomp search`` recommends a point under, from the space's constraints.

    The space's accuracy constraint bounds the search (often generous, 5 points); what to ship
    defaults to ``autocomp report``'s 1 point unless the space asks for less. A point slower than
    the teacher may win only when the space sets a latency limit (as ``--max-latency`` does for
    ``autocomp report``).
    """
    c = space.constraints
    return {"max_drop": min(1.0, c.max_accuracy_drop) if c.max_accuracy_drop is not None else 1.0,
            "max_size": c.max_size_bytes, "max_latency": c.max_latency_ms,
            "allow_slower": c.max_latency_ms is not None}


# The file that marks a folder as an autocomp run directory, made when a run first uses it.
RUN_MARKER = ".autocomp-run"
# What a run writes in its directory (besides study.db, the default storage): a later run replaces
# these, so a folder holding any of them that autocomp did not write is refused. Other files there
# are never written, so they do not make a folder someone else's.
RUN_OUTPUTS = ("report.html", "trials.csv", "trials.parquet", "autocomp.log", "artifacts")


def claim_run_dir(folder: Path, overwrite: bool = False) -> Callable[[], None]:
    """Make ``folder`` this run's directory (created, marked), or refuse one holding files under
    the names a run writes that autocomp did not write; return the undo for a run refused later
    (what was made is removed).

    autocomp's own: the folder holds the marker, or ``study.db`` (a run made before the marker
    existed, in its default storage). ``overwrite`` writes into any folder.

    Example::

        undo = claim_run_dir(Path("runs/demo"))   # AutocompError if it holds someone's report.html
    """
    if folder.exists() and not folder.is_dir():
        raise AutocompError(f"run directory {folder} is a file; choose another --run-dir")
    names = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    theirs = [n for n in RUN_OUTPUTS if n in names]
    if theirs and not {RUN_MARKER, "study.db"} & names and not overwrite:
        raise AutocompError(f"run directory {folder} holds {', '.join(theirs)} that autocomp did not write (no "
                            f"{RUN_MARKER} there); choose another --run-dir, or pass --overwrite to replace them")
    made = [p for p in (*reversed(folder.parents), folder) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / RUN_MARKER
    new_marker = not marker.exists()
    if new_marker:
        # Workers sharing a --run-dir may start together: each writes through its own .part.
        atomic_write(marker, lambda p: p.write_text("autocomp run directory: autocomp writes its report, trials "
                                                    "table and artifacts here\n", encoding="utf-8"),
                     part=f".{os.getpid()}.part")

    def undo() -> None:
        if new_marker and {p.name for p in folder.iterdir()} - {RUN_MARKER} == names:  # the run wrote nothing
            marker.unlink(missing_ok=True)
        for p in reversed(made):
            try:
                p.rmdir()
            except OSError:  # something else was written there meanwhile: keep it
                return

    return undo


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
