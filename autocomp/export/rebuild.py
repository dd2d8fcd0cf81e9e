"""The trial's artifact for export: the study's kept file when its sha256 matches, else rebuilt
from storage (teacher + Plan + seed), its fine-tune continued when asked.

Example::

    source = load_trial("sqlite:///runs/x/study.db", "x", 12)
    bench, cfg = rebuild_bench(source, "onnxruntime")
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import optuna
import torch

from autocomp._user_code import source_digest
from autocomp.artifact import export
from autocomp.config import SearchConfig
from autocomp.errors import AutocompError
from autocomp.measure import MeasureConfig
from autocomp.models.zoo import state_digest
from autocomp.pipeline.workbench import Workbench, file_sha256
from autocomp.study.create import load_existing_study
from autocomp.study.records import StudyRecord, TrialRecord, artifact_path, has_plan, read_study, read_trial


@dataclass(frozen=True)
class TrialSource:
    """A finished trial and its study, as stored."""

    study_name: str
    storage: str
    study: StudyRecord
    trial: TrialRecord
    config: SearchConfig


@dataclass(frozen=True)
class Built:
    """The sized ``.acz`` (what the study measured, or its rebuild), where it came from, and the
    PyTorch student when one was rebuilt (``.pt`` formats need it)."""

    acz: Path
    source: str
    student: torch.nn.Module | None = None


def load_trial(storage: str, study_name: str, number: int) -> TrialSource:
    """A finished trial of a study made by ``autocomp search``, whose builder's source is unchanged."""
    study = load_existing_study(storage, study_name)
    trial = read_trial(_finished_trial(study, number))
    record = read_study(study)
    if not record.config or record.config.get("model") == "python":
        raise AutocompError(f"study {study_name!r} was made from Python: rebuild it with "
                            "autocomp.pipeline.workbench.Workbench")
    config = SearchConfig.from_dict(dict(record.config))
    # Studies made before the builder's source was recorded have nothing to compare.
    if record.teacher.source_recorded and source_digest(config.model) != record.teacher.source_digest:
        raise AutocompError(f"the source of {config.model} changed since the study was made; cannot rebuild its "
                            "trials (restore the file)")
    return TrialSource(study_name, storage, record, trial, config)


def rebuild_bench(source: TrialSource, runtime: str, progress: Callable | None = None) -> tuple[Workbench,
                                                                                              MeasureConfig]:
    """The study's data (the whole validation split) and teacher, on the deployment runtime."""
    from autocomp.pipeline.setup import prepare

    config = source.config
    # The whole validation split: the search ranked on a subset, the file shipped is measured on all.
    teacher, data = prepare(replace(config, val_samples=None), log=lambda s: None, progress=progress)
    if state_digest(teacher) != source.study.teacher.digest:
        raise AutocompError("the teacher rebuilt now differs from the study's (weights changed); cannot rebuild")
    # The deployment runtime, whatever trained it: the study's, or the written format's own.
    measure = replace(config.measure, runtime=runtime)
    return Workbench(teacher, data, measure, config.device, progress=progress), measure


def extra_steps(epochs: float | None, steps: int | None, n_train: int, batch_size: int) -> int:
    """Fine-tune steps to continue for: ``--steps``, or ``--epochs`` of the training split, else 0."""
    if steps is not None:
        return steps
    return int(math.ceil(epochs * n_train / batch_size)) if epochs is not None else 0


def build_artifact(bench: Workbench, trial: TrialRecord, reusable: bool, extra: int, target: Path,
                   progress: Callable | None = None, storage: str | None = None) -> Built:
    """The kept artifact when ``reusable`` (a format made from its bytes, no continued fine-tune)
    and its sha256 matches; else the trial rebuilt into ``target``. ``storage``: where an older
    study's relative artifact path is looked for besides the current directory."""
    kept, recorded = artifact_path(trial.artifact, storage), trial.artifact.sha256
    if reusable and not extra and kept and recorded and file_sha256(kept) == recorded:
        return Built(Path(kept), f"the study's stored artifact ({kept}, sha256 checked)")
    plan = trial.plan
    student, _ = bench.rebuild(plan)
    if extra:
        bench.on_progress = _step_bar(progress, extra)
        # A fresh seed for the continued fine-tune: its batches are new ones, not a replay; the
        # masks stay as the trial's fine-tune left them (a sparsity ramp is not run again).
        bench.finetune(student, plan.with_distill(sparsity_ramp=0.0), steps=extra, seed=plan.seed + 1)
    # Bakes the student in place: .pt formats get exactly the weights the artifact holds.
    export(student, bench.example, bench.calibration, target, plan.quant_mode)
    source = (f"rebuilt from the Plan, fine-tune continued for {extra} more steps" if extra
              else "rebuilt from the Plan (teacher + Plan + seed)")
    return Built(target, source, student)


def _step_bar(progress: Callable | None, total: int) -> Callable[[int, int, float], None] | None:
    if progress is None:
        return None
    task = progress("continued fine-tune", total)

    def update(step: int, steps: int, images_per_s: float) -> None:
        task.update(1)
        if hasattr(task, "set_postfix_str"):
            task.set_postfix_str(f"{images_per_s:.0f} img/s", refresh=False)
        if step == steps:
            task.close()

    return update


def _finished_trial(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    for t in study.trials:
        if t.number == number:
            if t.state != optuna.trial.TrialState.COMPLETE or not has_plan(t):
                raise AutocompError(f"trial {number} did not finish ({t.state.name.lower()}); pick a finished trial")
            return t
    raise AutocompError(f"study {study.study_name!r} has no trial {number} (it has {len(study.trials)})")
