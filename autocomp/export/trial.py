"""``autocomp export``: a trial's artifact, re-measured on the whole validation split, with its card.

Without ``--epochs``/``--steps`` the file the study measured is reused (checked against the
sha256 the trial recorded); only when it is gone, or a format needs the PyTorch module
(``.pt``), is the trial rebuilt from storage (teacher + Plan + seed). With ``--epochs E`` (or
``--steps N``) the trial is rebuilt and its fine-tune continued with the same Plan for E more
epochs before export: the point a user ships deserves more than the brief search-time
fine-tune.

Beside the file go ``FILE.card.json`` and ``FILE.card.md``: the Plan, the preprocessing a device
must reproduce, and both accuracies, each saying what it was measured on: **search-time** (the
study's number: the search-time fine-tune, on the ``--val-samples`` subset) and **final** (this
file, on the whole validation split).

The output format follows ``--out``'s extension: ``.acz`` (the artifact), ``.onnx`` (expanded
plain ONNX), ``.xml`` (OpenVINO IR, ``NAME.bin`` beside it; measured on OpenVINO, so the card's
accuracy is the written file's), ``.pt`` (TorchScript; ``--format state_dict`` for a state dict).
"""

from __future__ import annotations

import json
import math
import shutil
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import optuna
import torch

from autocomp._user_code import source_digest
from autocomp.artifact import export, to_bytes
from autocomp.config import SearchConfig
from autocomp.errors import AutocompError
from autocomp.measure import MeasureConfig, measure_artifact, session_accuracy, session_for
from autocomp.models.zoo import state_digest
from autocomp.pipeline.workbench import Workbench, file_sha256
from autocomp.plan import Plan
from autocomp.runtimes import Runtime, RuntimeOptions, format_runtime, require, summary
from autocomp.study.create import load_existing_study, study_attr

PROTOCOL = ("accuracy: top-1 of the artifact in {runtime} on the validation split; size: bytes of the .acz "
            "file; latency: median of >= 30 timed runs after warm-up in {runtime}, batch {batch}, "
            "{threads} thread(s)")
FORMATS = {"acz": (".acz",), "onnx": (".onnx",), "openvino": (".xml",), "torchscript": (".pt", ".pth"),
           "state_dict": (".pt", ".pth")}
BY_EXTENSION = {".acz": "acz", ".onnx": "onnx", ".xml": "openvino", ".pt": "torchscript", ".pth": "torchscript"}


def output_format(out: str, fmt: str | None = None) -> str:
    """The format ``--out``'s extension asks for, or a one-line refusal (unknown, or not ``fmt``'s)."""
    ext = Path(out).suffix.lower()
    if fmt is None:
        if ext not in BY_EXTENSION:
            raise AutocompError(f"--out {out}: cannot tell the format from {ext or 'a name without extension'}; "
                                "use .acz (artifact), .onnx (plain ONNX), .xml (OpenVINO IR) or .pt (TorchScript)")
        return BY_EXTENSION[ext]
    if fmt not in FORMATS:
        raise AutocompError(f"--format {fmt}: use one of {', '.join(FORMATS)}")
    if ext not in FORMATS[fmt]:
        raise AutocompError(f"--format {fmt} writes {' or '.join(FORMATS[fmt])} files, but --out is {out}")
    return fmt


def export_trial(storage: str, study_name: str, number: int, out: str, fmt: str | None = None,
                 epochs: float | None = None, steps: int | None = None, progress: Callable | None = None) -> str:
    """Write trial ``number``'s file and card; return a summary line.

    Example::

        export_trial("sqlite:///runs/x/study.db", "x", 12, "model.acz", epochs=1)
    """
    fmt = output_format(out, fmt)
    own = format_runtime(fmt)  # a runtime's own format (OpenVINO IR) is measured on that runtime
    if epochs is not None and (epochs <= 0 or not math.isfinite(epochs)):
        raise AutocompError(f"--epochs must be > 0, got {epochs}")
    if steps is not None and steps <= 0:
        raise AutocompError(f"--steps must be > 0, got {steps}")
    if epochs is not None and steps is not None:
        raise AutocompError("pass either --epochs or --steps, not both")
    out_path = Path(out)
    if not out_path.parent.exists():
        raise AutocompError(f"output directory does not exist: {out_path.parent}")
    study = load_existing_study(storage, study_name)
    trial = _finished_trial(study, number)
    stored = study_attr(study, "config")
    if not stored or stored.get("model") == "python":
        raise AutocompError(f"study {study_name!r} was made from Python: rebuild it with "
                            "autocomp.pipeline.workbench.Workbench")
    config = SearchConfig.from_dict(stored)
    known_source = study_attr(study, "teacher_source_digest", "unrecorded")  # studies before it have none
    if known_source != "unrecorded" and source_digest(config.model) != known_source:
        raise AutocompError(f"the source of {config.model} changed since the study was made; cannot rebuild its "
                            "trials (restore the file)")
    runtime_name = own.name if own else config.runtime
    require(runtime_name, RuntimeOptions(config.threads, config.device, config.precision, config.batch))
    from autocomp.pipeline.setup import prepare

    # The whole validation split: the search ranked on a subset, the file shipped is measured on all.
    teacher, data = prepare(replace(config, val_samples=None), log=lambda s: None, progress=progress)
    if state_digest(teacher) != study_attr(study, "teacher_digest"):
        raise AutocompError("the teacher rebuilt now differs from the study's (weights changed); cannot rebuild")
    plan = Plan.from_dict(trial.user_attrs["plan"])
    # The deployment runtime, whatever trained it: the study's, or the written format's own.
    measure_cfg = MeasureConfig(config.batch, config.threads, config.device, runtime=runtime_name,
                                precision=config.precision)
    bench = Workbench(teacher, data, measure_cfg, config.device, progress=progress)
    extra = steps if steps is not None else (
        int(math.ceil(epochs * data.n_train / plan.distill.batch_size)) if epochs is not None else 0)

    recorded = trial.user_attrs.get("artifact_sha256")
    kept = trial.user_attrs.get("artifact")
    reuse = not extra and fmt in ("acz", "onnx", "openvino") and kept and Path(kept).is_file() and recorded \
        and file_sha256(kept) == recorded
    student = None
    if reuse:
        acz, source = Path(kept), f"the study's stored artifact ({kept}, sha256 checked)"
    else:
        student, _ = bench.rebuild(plan)
        if extra:
            bench.on_progress = _step_bar(progress, extra)
            # A fresh seed for the continued fine-tune: its batches are new ones, not a replay.
            bench.finetune(student, plan, steps=extra, seed=plan.seed + 1)
        acz = out_path if fmt == "acz" else bench.workdir / "export.acz"
        # Bakes the student in place: .pt formats get exactly the weights the artifact holds.
        export(student, bench.example, bench.calibration, acz, plan.quant_mode)
        source = (f"rebuilt from the Plan, fine-tune continued for {extra} more steps" if extra
                  else "rebuilt from the Plan (teacher + Plan + seed)")
    digest = file_sha256(acz)
    metrics = measure_artifact(acz, bench.val, None, measure_cfg, bench.teacher_session)
    # The search ranked on a seeded subset of the validation split: this file on that subset too,
    # on the same runtime and settings as every other number on the card.
    n_val_search = config.val_samples if config.val_samples is not None and config.val_samples < data.n_val else None
    search_subset = session_accuracy(session_for(acz, measure_cfg), data.val_subset(n_val_search, config.seed)) \
        if n_val_search else None
    options = RuntimeOptions(config.threads, config.device, config.precision, config.batch)
    files = _write(out_path, fmt, acz, student, bench.example, own, options)
    written = _written_file(own, out_path, options, bench) if own is not None else None

    stored_metrics = trial.user_attrs.get("metrics", {})
    runtime = bench.teacher_session.describe()
    searched_on = (f"a seeded subset of {n_val_search} of the {data.n_val} validation images (seed {config.seed})"
                   if n_val_search else f"the whole validation split ({data.n_val} images)")
    accuracy = {
        "search_time": {"value": stored_metrics.get("accuracy"), "fine_tune_steps": plan.distill.steps,
                        "measured_on": searched_on, "teacher": study.user_attrs.get("teacher_accuracy")},
        "final": {"value": metrics.accuracy, "fine_tune_steps": plan.distill.steps + extra,
                  "measured_on": f"the whole validation split ({data.n_val} images)",
                  "teacher": bench.teacher_accuracy},
    }
    if search_subset is not None:
        accuracy["final_on_search_subset"] = {"value": search_subset, "measured_on": searched_on}
    card = {
        "study": study_name, "trial": number, "storage": storage, "format": fmt, "file": str(out_path),
        "file_bytes": sum(f.stat().st_size for f in files), "files": {str(f): f.stat().st_size for f in files},
        "artifact_sha256": digest, "artifact_source": source,
        "matches_study_artifact": digest == recorded if recorded and not extra else None,
        "plan": plan.to_dict(), "fine_tune_steps": plan.distill.steps + extra, "accuracy": accuracy,
        "measured_now": metrics.to_dict(), "measured_in_study": stored_metrics,
        "teacher_accuracy": study.user_attrs.get("teacher_accuracy"),
        "preprocessing": study.user_attrs.get("preprocessing") or data.preprocessing,
        "input": study.user_attrs.get("data_norm"),
        "runtime": runtime, "runtime_in_study": study_attr(study, "runtime"), "written_file": written,
        "protocol": PROTOCOL.format(batch=config.batch, threads=config.threads, runtime=summary(runtime)),
    }
    Path(f"{out_path}.card.json").write_text(json.dumps(card, indent=2), encoding="utf-8")
    Path(f"{out_path}.card.md").write_text(_markdown(card), encoding="utf-8")
    s, f = accuracy["search_time"], accuracy["final"]
    return (f"wrote {out_path} ({card['file_bytes']} bytes) and its card ({source}); final accuracy "
            f"{f['value']:.2f}% on {f['measured_on']} after {f['fine_tune_steps']} fine-tune steps; search-time "
            f"accuracy {_pct(s['value'])} on {s['measured_on']} after {s['fine_tune_steps']} steps; artifact "
            f"{metrics.size_bytes} bytes, latency {metrics.latency_ms:.4f} ms")


def _pct(value: float | None) -> str:
    return f"{value:.2f}%" if value is not None else "n/a"


def _write(out_path: Path, fmt: str, acz: Path, student: torch.nn.Module | None, example: torch.Tensor,
           own: Runtime | None, options: RuntimeOptions) -> list[Path]:
    """Write ``fmt`` to ``out_path`` (atomically); return the files written (an IR is two)."""
    if own is not None:  # the runtime's own format, from the same graph (OpenVINO IR: NAME.xml + NAME.bin)
        return own.save(to_bytes(acz), out_path, fmt, options)
    if fmt == "acz":
        if acz.resolve() != out_path.resolve():
            shutil.copyfile(acz, _part(out_path))
            _part(out_path).replace(out_path)
    elif fmt == "onnx":
        _atomic_bytes(out_path, to_bytes(acz))
    elif fmt == "torchscript":
        with warnings.catch_warnings():  # TorchScript is marked deprecated; it is still what .pt users load
            warnings.simplefilter("ignore", FutureWarning)
            traced = torch.jit.trace(student.eval(), example)
        traced.save(str(_part(out_path)))
        _part(out_path).replace(out_path)
    elif fmt == "state_dict":
        torch.save(student.state_dict(), _part(out_path))
        _part(out_path).replace(out_path)
    return [out_path]


def _written_file(own: Runtime, path: Path, options: RuntimeOptions, bench: Workbench) -> dict:
    """The written file loaded back by its runtime: its accuracy with the measured settings (the
    card's), the call that gives them, and its accuracy under the runtime's own defaults."""
    plain = own.open_file(path, None)
    return {"load": own.load_call(path, options),
            "accuracy": session_accuracy(own.open_file(path, options), bench.val),
            "accuracy_runtime_defaults": session_accuracy(plain, bench.val),
            "runtime_defaults": summary(plain.describe())}


def _part(path: Path) -> Path:
    return path.with_name(path.name + ".part")


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
            if t.state != optuna.trial.TrialState.COMPLETE or "plan" not in t.user_attrs:
                raise AutocompError(f"trial {number} did not finish ({t.state.name.lower()}); pick a finished trial")
            return t
    raise AutocompError(f"study {study.study_name!r} has no trial {number} (it has {len(study.trials)})")


def _atomic_bytes(path: Path, data: bytes) -> None:
    tmp = _part(path)
    tmp.write_bytes(data)
    tmp.replace(path)


def _markdown(card: dict) -> str:
    m, s = card["measured_now"], card["measured_in_study"]
    acc = card["accuracy"]
    lines = [
        f"# autocomp artifact: {card['study']} trial {card['trial']}",
        "",
        f"File: `{card['file']}` ({card['format']}, {card['file_bytes']} bytes; {card['artifact_source']})",
        "",
        "## Accuracy",
        "",
        "| | accuracy % | teacher % | fine-tune steps | measured on |",
        "|---|---|---|---|---|",
        f"| **final** (this file) | {_num(acc['final']['value'])} | {_num(acc['final']['teacher'])} | "
        f"{acc['final']['fine_tune_steps']} | {acc['final']['measured_on']} |",
        f"| search-time (the study's) | {_num(acc['search_time']['value'])} | {_num(acc['search_time']['teacher'])} | "
        f"{acc['search_time']['fine_tune_steps']} | {acc['search_time']['measured_on']} |",
    ]
    if "final_on_search_subset" in acc:
        lines.append(f"| final, on the search-time subset | {_num(acc['final_on_search_subset']['value'])} | | "
                     f"{acc['final']['fine_tune_steps']} | {acc['final_on_search_subset']['measured_on']} |")
    lines += ["", "## Measured now and in the study", "", "| metric | measured now | in the study |", "|---|---|---|"]
    for key in ("accuracy", "size_bytes", "latency_ms", "latency_ratio", "latency_p90_ms", "params",
                "nonzero_params", "macs"):
        lines.append(f"| {key} | {m.get(key)} | {s.get(key)} |")
    w = card.get("written_file")
    if w:
        lines += ["", f"Load it with `{w['load']}`: accuracy {_pct(w['accuracy'])}, the written file's own, as "
                  f"measured above. With the runtime's defaults ({w['runtime_defaults']}) it scores "
                  f"{_pct(w['accuracy_runtime_defaults'])}."]
    pre = card.get("preprocessing") or {}
    lines += ["", "## Input preprocessing (reproduce it on the device)", "",
              f"- eval transform: {pre.get('eval_transform')}",
              f"- mean {pre.get('mean')}, std {pre.get('std')} ({pre.get('normalization')})",
              f"- input shape: {pre.get('input_shape')}",
              "", f"How measured: {card['protocol']}.", "", "Plan:", "", "```json",
              json.dumps(card["plan"], indent=2), "```", ""]
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else "n/a"
