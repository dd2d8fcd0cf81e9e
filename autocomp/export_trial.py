"""``autocomp export``: rebuild a trial from storage (teacher + Plan + seed), write it, re-measure.

Writes the artifact and a card beside it (``FILE.card.json`` and ``FILE.card.md``) with the
Plan, the metrics measured now on the written file, the metrics the study stored, and how
they were measured: on the study's runtime, or, for a runtime's own format (``--format
openvino``: an OpenVINO IR), on that runtime, so the card's accuracy is the written file's.
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
from autocomp.measure import MeasureConfig, measure_artifact, session_accuracy
from autocomp.models import state_digest
from autocomp.plan import Plan
from autocomp.runtimes import Runtime, RuntimeOptions, format_runtime, require, summary
from autocomp.study import load_existing_study, study_attr
from autocomp.trial import Workbench

PROTOCOL = ("accuracy: top-1 of the artifact in {runtime} on the validation split; size: bytes of the .acz "
            "file; latency: median of >= 30 timed runs after warm-up in {runtime}, batch {batch}, "
            "{threads} thread(s)")


def export_trial(storage: str, study_name: str, number: int, out: str, fmt: str | None = None,
                 epochs: float | None = None) -> str:
    fmt = fmt or ("openvino" if Path(out).suffix.lower() == ".xml" else "acz")
    own = format_runtime(fmt)  # a runtime's own format is measured on that runtime
    if own is not None and Path(out).suffix.lower() != own.formats[fmt]:
        raise AutocompError(f"--format {fmt} writes {own.formats[fmt]} files, but --out is {out}")
    if own is None and Path(out).suffix.lower() == ".xml":
        raise AutocompError(f"--out {out}: .xml is an OpenVINO IR; use --format openvino (or leave --format out)")
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
    runtime_name = own.name if own else config.runtime
    require(runtime_name, RuntimeOptions(config.threads, config.device, config.precision, config.batch))
    from autocomp.runner import prepare

    teacher, data = prepare(config, log=lambda s: None)
    if state_digest(teacher) != study_attr(study, "teacher_digest"):
        raise AutocompError("the teacher rebuilt now differs from the study's (weights changed); cannot rebuild")
    plan = Plan.from_dict(trial.user_attrs["plan"])
    measure_cfg = MeasureConfig(config.batch, config.threads, config.device, runtime=runtime_name,
                                precision=config.precision)
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
    files, written = [out_path], None
    if fmt == "onnx":
        _atomic_bytes(out_path, to_bytes(acz))
    elif own is not None:  # the runtime's own format, from the same graph (OpenVINO IR: NAME.xml + NAME.bin)
        files = own.save(to_bytes(acz), out_path, fmt, RuntimeOptions(config.threads, config.device, config.precision))
        written = _written_file(own, out_path, RuntimeOptions(config.threads, config.device, config.precision,
                                                                config.batch), bench)
    elif fmt == "torchscript":
        traced = torch.jit.trace(student.eval(), bench.example)
        traced.save(str(out_path))
    elif fmt == "state_dict":
        torch.save(student.state_dict(), out_path)
    stored_metrics = trial.user_attrs.get("metrics", {})
    runtime = bench.teacher_session.describe()
    card = {
        "study": study_name, "trial": number, "storage": storage, "format": fmt, "file": str(out_path),
        "file_bytes": sum(f.stat().st_size for f in files), "files": {str(f): f.stat().st_size for f in files},
        "plan": plan.to_dict(), "fine_tune_steps": steps or plan.distill.steps,
        "measured_now": metrics.to_dict(), "measured_in_study": stored_metrics,
        "teacher_accuracy": study.user_attrs.get("teacher_accuracy"),
        "input": study.user_attrs.get("data_norm"),
        "runtime": runtime, "runtime_in_study": study_attr(study, "runtime"), "written_file": written,
        "protocol": PROTOCOL.format(batch=config.batch, threads=config.threads, runtime=summary(runtime)),
    }
    Path(f"{out_path}.card.json").write_text(json.dumps(card, indent=2), encoding="utf-8")
    Path(f"{out_path}.card.md").write_text(_markdown(card), encoding="utf-8")
    same = "" if steps else (
        f" (study: {stored_metrics.get('accuracy', float('nan')):.2f}%, {stored_metrics.get('size_bytes')} bytes)")
    return (f"wrote {out_path} ({card['file_bytes']} bytes) and its card; accuracy {metrics.accuracy:.2f}%, "
            f"artifact {metrics.size_bytes} bytes, latency {metrics.latency_ms:.4f} ms{same}")


def _written_file(own: Runtime, path: Path, options: RuntimeOptions, bench: Workbench) -> dict:
    """The written file loaded back by its runtime: its accuracy with the measured settings (the
    card's), the call that gives them, and its accuracy under the runtime's own defaults."""
    plain = own.open_file(path, None)
    return {"load": own.load_call(path, options),
            "accuracy": session_accuracy(own.open_file(path, options), bench.val_x, bench.val_y),
            "accuracy_runtime_defaults": session_accuracy(plain, bench.val_x, bench.val_y),
            "runtime_defaults": summary(plain.describe())}


def _finished_trial(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    for t in study.trials:
        if t.number == number:
            if t.state != optuna.trial.TrialState.COMPLETE or "plan" not in t.user_attrs:
                raise AutocompError(f"trial {number} did not finish ({t.state.name.lower()}); pick a finished trial")
            return t
    raise AutocompError(f"study {study.study_name!r} has no trial {number} (it has {len(study.trials)})")


def _pct(value: float | None) -> str:
    return f"{value:.2f}%" if value is not None else "n/a"


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
    w = card.get("written_file")
    if w:
        lines += ["", f"Load it with `{w['load']}`: accuracy {_pct(w['accuracy'])}, the written file's own, as "
                  f"measured above. With the runtime's defaults ({w['runtime_defaults']}) it scores "
                  f"{_pct(w['accuracy_runtime_defaults'])}."]
    lines += ["", f"How measured: {card['protocol']}.", "", "Plan:", "", "```json",
              json.dumps(card["plan"], indent=2), "```", ""]
    return "\n".join(lines)
