"""``autocomp export``: a trial's artifact, re-measured on the whole validation split, with its card.

Without ``--epochs``/``--steps`` the file the study measured is reused (checked against the
sha256 the trial recorded); only when it is gone, or a format needs the PyTorch module
(``.pt``), is the trial rebuilt from storage (teacher + Plan + seed). With ``--epochs E`` (or
``--steps N``) the trial is rebuilt and its fine-tune continued with the same Plan for E more
epochs before export: the point a user ships deserves more than the brief search-time
fine-tune.

Beside the file go ``FILE.card.json`` and ``FILE.card.md`` (``autocomp.export.card``): the Plan,
the preprocessing a device must reproduce, both sizes (the sized ``.acz`` and the file written),
and both accuracies, each saying what it was measured on: **search-time** (the study's number:
the search-time fine-tune, on the ``--val-samples`` subset) and **final** (this file, on the
whole validation split).

The output format follows ``--out``'s extension (``autocomp.export.formats``); a runtime's own
format (``.xml``, OpenVINO IR) is measured on that runtime, so the card's accuracy is the written
file's. The jobs: ``rebuild`` (the artifact), ``formats`` (writing), ``card``; this module runs them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from autocomp.errors import AutocompError
from autocomp.export.card import CardFacts, card_paths, make_card, summary_line, write_card
from autocomp.export.formats import REUSES_ARTIFACT, output_format, write_format, written_file
from autocomp.export.rebuild import TrialSource, build_artifact, extra_steps, load_trial, rebuild_bench
from autocomp.measure import measure_artifact, session_accuracy, session_for
from autocomp.pipeline.workbench import file_sha256
from autocomp.runtimes import format_runtime, require


def export_trial(storage: str, study_name: str, number: int, out: str, fmt: str | None = None,
                 epochs: float | None = None, steps: int | None = None, progress: Callable | None = None,
                 force: bool = False, measure_on: str | None = None) -> str:
    """Write trial ``number``'s file and card; return a summary line.

    An existing ``out`` (or its card, or an IR's ``.bin``) is replaced only with ``force``.
    ``measure_on`` (``ssh://host``, or ``here``) times the file there instead of where the study
    timed its trials.

    Example::

        export_trial("sqlite:///runs/x/study.db", "x", 12, "model.acz", epochs=1)
    """
    fmt = output_format(out, fmt)
    own = format_runtime(fmt)  # a runtime's own format (OpenVINO IR) is measured on that runtime
    out_path = _checked_out(out, epochs, steps)
    _refuse_existing(out_path, fmt, force)
    src = load_trial(storage, study_name, number)
    if measure_on is not None:  # validated as the search's flag is: one line for a bad URL
        src = replace(src, config=replace(src.config, measure_on=None if measure_on == "here" else measure_on))
    config, plan = src.config, src.trial.plan
    options = config.measure.options
    require(own.name if own else config.runtime, options)
    if config.measure_on:  # a device that cannot time the file is refused before anything is rebuilt
        from autocomp.runtimes.remote import open_device

        open_device(config.measure_on, own.name if own else config.runtime, options)
    bench, measure_cfg = rebuild_bench(src, own.name if own else config.runtime, progress)
    data = bench.data
    extra = extra_steps(epochs, steps, data.n_train, plan.distill.batch_size)
    target = out_path if fmt == "acz" else bench.workdir / "export.acz"
    built = build_artifact(bench, src.trial, fmt in REUSES_ARTIFACT, extra, target, progress, storage)
    digest = file_sha256(built.acz)
    if measure_on is None and (own is None or own.name == config.runtime):
        bench.pace.floor_ms = _study_pace(src)
    metrics = measure_artifact(built.acz, bench.val, measure_cfg, bench.teacher_session, bench.pace)
    session = session_for(built.acz, measure_cfg)  # the exported graph, on the card's runtime and settings
    # The search ranked on a seeded subset of the validation split: this file on that subset too,
    # on the same runtime and settings as every other number on the card.
    n_search = config.val_samples if config.val_samples is not None and config.val_samples < data.n_val else None
    on_subset = session_accuracy(session, data.val_subset(n_search, config.seed)) if n_search else None
    files = write_format(out_path, fmt, built.acz, built.student, bench.example, own, options)
    written = None
    if own is not None:  # the card describes the written file's own compiled model
        written, session = written_file(own, out_path, options, bench.val)
    searched_on = (f"a seeded subset of {n_search} of the {data.n_val} validation images (seed {config.seed})"
                   if n_search else f"the whole validation split ({data.n_val} images)")
    card = make_card(CardFacts(
        study=study_name, trial=number, storage=storage, fmt=fmt, out=out_path, files=files, sha256=digest,
        source=built.source, recorded_sha256=src.trial.artifact.sha256, extra_steps=extra, plan=plan,
        metrics=metrics, in_study=dict(src.trial.metrics), searched_on=searched_on, n_val=data.n_val,
        final_on_search_subset=on_subset, teacher_accuracy_now=bench.teacher_accuracy,
        teacher_accuracy_in_study=src.study.teacher.accuracy,
        preprocessing=dict(src.study.preprocessing or data.preprocessing),
        data_norm=dict(src.study.data_norm) if src.study.data_norm is not None else None,
        runtime=session.describe(), runtime_in_study=src.study.runtime,
        timing=dict(src.study.timing) if src.study.timing is not None else None, written=written,
        batch=config.batch, threads=config.threads))
    write_card(out_path, card)
    return summary_line(card)


def _study_pace(src: TrialSource) -> float | None:
    """The fastest the study's teacher ran (ms), for an export timed where the study timed: a
    teacher slower than that now means the host runs slower, and the pair is timed again
    (``autocomp.measure.latency.TeacherPace``)."""
    known = [v for v in (src.trial.metrics.get("teacher_latency_ms"), src.study.teacher.reference_ms) if v]
    return min(known, default=None)


def _checked_out(out: str, epochs: float | None, steps: int | None) -> Path:
    """``--out`` as a path, after refusing bad ``--epochs``/``--steps`` and a missing folder."""
    if epochs is not None and (epochs <= 0 or not math.isfinite(epochs)):
        raise AutocompError(f"--epochs must be > 0, got {epochs}")
    if steps is not None and steps <= 0:
        raise AutocompError(f"--steps must be > 0, got {steps}")
    if epochs is not None and steps is not None:
        raise AutocompError("pass either --epochs or --steps, not both")
    out_path = Path(out)
    if not out_path.parent.exists():
        raise AutocompError(f"output directory does not exist: {out_path.parent}")
    return out_path


def _refuse_existing(out_path: Path, fmt: str, force: bool) -> None:
    """Someone's file is never replaced without ``--force``: ``--out``, its card files, an IR's ``.bin``."""
    if force:
        return
    written = [out_path, *card_paths(out_path)] + ([out_path.with_suffix(".bin")] if fmt == "openvino" else [])
    there = [str(p) for p in written if p.exists() or p.is_symlink()]
    if there:
        raise AutocompError(f"--out {out_path}: {there[0]} exists" + (f" (and {len(there) - 1} more)" if len(there) > 1
                            else "") + "; pass --force to replace it, or choose another --out")
