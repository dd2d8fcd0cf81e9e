"""``autocomp export``: rebuild a trial from storage (teacher + Plan + seed), write it, re-measure.

Writes the artifact and a card beside it (``FILE.card.json`` and ``FILE.card.md``) with the
Plan, the metrics measured now on the written file, the metrics the study stored, and how
they were measured.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import torch

from autocomp.artifact import export, to_bytes
from autocomp.config import SearchConfig
from autocomp.errors import AutocompError
from autocomp.loading import source_digest
from autocomp.measure import MeasureConfig, measure_artifact
from autocomp.models import state_digest
from autocomp.plan import Plan
from autocomp.study import load_existing_study, study_attr
from autocomp.trial import Workbench

PROTOCOL = ("accuracy: top-1 of the artifact in ONNX Runtime on the validation split; size: bytes of the .acz "
            "file; latency: median of >= 30 timed runs after warm-up in ONNX Runtime (CPU), batch {batch}, "
            "{threads} thread(s)")


def export_trial(storage: str, study_name: str, number: int, out: str, fmt: str = "acz",
                 epochs: float | None = None) -> str:
    study = load_existing_study(storage, study_name)
    trial = _finished_trial(study, number)
    stored = study_attr(study, "config")
    if not stored or stored.get("model") == "python":
        raise AutocompError(f"study {study_name!r} was made from Python: rebuild it with autocomp.trial.Workbench")
    config = SearchConfig(**{k: tuple(v) if k == "baselines" else v for k, v in stored.items()})
    known_source = study_attr(study, "teacher_source_digest", "unrecorded")  # studies before it have none
    if known_source != "unrecorded" and source_digest(config.model) != known_source:
        raise AutocompError(f"the source of {config.model} changed since the study was made; cannot rebuild its "
                            "trials (restore the file)")
    from autocomp.runner import prepare

    teacher, data = prepare(config, log=lambda s: None)
    if state_digest(teacher) != study_attr(study, "teacher_digest"):
        raise AutocompError("the teacher rebuilt now differs from the study's (weights changed); cannot rebuild")
    plan = Plan.from_dict(trial.user_attrs["plan"])
    measure_cfg = MeasureConfig(config.batch, config.threads, config.device)
    bench = Workbench(teacher, data, measure_cfg, config.device)
    steps = None
    if epochs is not None:
        if epochs <= 0 or not math.isfinite(epochs):
            raise AutocompError(f"--epochs must be > 0, got {epochs}")
        steps = int(math.ceil(epochs * len(data.train_x) / plan.distill.batch_size))
    out_path = Path(out)
    if not out_path.parent.exists():
        raise AutocompError(f"output directory does not exist: {out_path.parent}")
    student, _ = bench.rebuild(plan, steps=steps)
    acz = out_path if fmt == "acz" else bench.workdir / "export.acz"
    export(student, bench.example, bench.calibration, acz, plan.quant_mode)
    metrics = measure_artifact(acz, bench.val_x, bench.val_y, measure_cfg, bench.teacher_session)
    if fmt == "onnx":
        _atomic_bytes(out_path, to_bytes(acz))
    elif fmt == "torchscript":
        traced = torch.jit.trace(student.eval(), bench.example)
        traced.save(str(out_path))
    elif fmt == "state_dict":
        torch.save(student.state_dict(), out_path)
    stored_metrics = trial.user_attrs.get("metrics", {})
    card = {
        "study": study_name, "trial": number, "storage": storage, "format": fmt, "file": str(out_path),
        "file_bytes": out_path.stat().st_size, "plan": plan.to_dict(), "fine_tune_steps": steps or plan.distill.steps,
        "measured_now": metrics.to_dict(), "measured_in_study": stored_metrics,
        "teacher_accuracy": study.user_attrs.get("teacher_accuracy"),
        "input": study.user_attrs.get("data_norm"),
        "protocol": PROTOCOL.format(batch=config.batch, threads=config.threads),
    }
    Path(f"{out_path}.card.json").write_text(json.dumps(card, indent=2), encoding="utf-8")
    Path(f"{out_path}.card.md").write_text(_markdown(card), encoding="utf-8")
    same = "" if steps else (
        f" (study: {stored_metrics.get('accuracy', float('nan')):.2f}%, {stored_metrics.get('size_bytes')} bytes)")
    return (f"wrote {out_path} ({card['file_bytes']} bytes) and its card; accuracy {metrics.accuracy:.2f}%, "
            f"artifact {metrics.size_bytes} bytes, latency {metrics.latency_ms:.4f} ms{same}")


def _finished_trial(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    for t in study.trials:
        if t.number == number:
            if t.state != optuna.trial.TrialState.COMPLETE or "plan" not in t.user_attrs:
                raise AutocompError(f"trial {number} did not finish ({t.state.name.lower()}); pick a finished trial")
            return t
    raise AutocompError(f"study {study.study_name!r} has no trial {number} (it has {len(study.trials)})")


def _atomic_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    tmp.replace(path)


def _markdown(card: dict) -> str:
    m, s = card["measured_now"], card["measured_in_study"]
    lines = [
        f"# autocomp artifact: {card['study']} trial {card['trial']}",
        "",
        f"File: `{card['file']}` ({card['format']}, {card['file_bytes']} bytes)",
        "",
        "| metric | measured now | in the study |",
        "|---|---|---|",
    ]
    for key in ("accuracy", "size_bytes", "latency_ms", "latency_p90_ms", "params", "nonzero_params", "macs"):
        lines.append(f"| {key} | {m.get(key)} | {s.get(key)} |")
    lines += ["", f"How measured: {card['protocol']}.", "", "Plan:", "", "```json",
              json.dumps(card["plan"], indent=2), "```", ""]
    return "\n".join(lines)
