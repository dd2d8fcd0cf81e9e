"""Write the run's report: trials.csv, trials.parquet and one self-contained report.html.

The page carries plotly.js once, inline, so it opens offline and can be mailed as one file.

Example::

    paths = write_report(study, "runs/demo", storage="sqlite:///runs/demo/study.db")
    paths["html"]  # runs/demo/report.html
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from autocomp.artifact.container import atomic_write
from autocomp.report import figures, profile
from autocomp.report.frame import pareto_frame, teacher_point, trials_frame
from autocomp.report.hypervolume import hypervolume_history
from autocomp.report.importance import importance_data
from autocomp.report.plots import finished, pareto_data, policy_data
from autocomp.report.recommend import Recommendation, export_command, recommend
from autocomp.runtimes import summary
from autocomp.study.hypervolume import ACCURACY_MARGIN, reference_point
from autocomp.study.records import read_study

PLOT_CONFIG = {"displaylogo": False, "responsive": True}
STORAGE_PLACEHOLDER = "STORAGE_URL"
MAX_FAILURES = 30  # rows of the failures table; trials.csv has them all
CSS = """
body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1200px;padding:0 16px;color:#222}
h2{margin-top:36px;border-bottom:1px solid #ddd;padding-bottom:4px} .note{color:#666}
table.dataframe{border-collapse:collapse;font-size:13px} table.dataframe td,table.dataframe th{padding:3px 8px;
border-bottom:1px solid #eee;text-align:right} table.dataframe td:last-child{text-align:left}
.rec{background:#fff8e1;border-left:4px solid #ffbf00;padding:8px 16px} pre{background:#f4f4f4;padding:8px;
overflow-x:auto} .figure{margin:8px 0}
"""


def write_report(study: optuna.Study, out_dir: str | Path, *, storage: str | None = None, max_drop: float = 1.0,
                 max_size: int | None = None, max_latency: float | None = None,
                 prefer: str = "size", allow_slower: bool = False) -> dict[str, Path]:
    """Write ``trials.csv``, ``trials.parquet`` and ``report.html`` under ``out_dir``; return their paths.

    ``storage`` is only used to print the exact export command; the limits, ``prefer`` and
    ``allow_slower`` are those of :func:`autocomp.report.recommend.recommend`.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frame = trials_frame(study)
    paths = {"csv": out / "trials.csv", "parquet": out / "trials.parquet", "html": out / "report.html"}
    _atomic(paths["csv"], lambda p: frame.to_csv(p, index=False))
    _atomic(paths["parquet"], lambda p: _one_type_per_column(frame).to_parquet(p, index=False))
    page = render_page(study, frame, storage=storage, max_drop=max_drop, max_size=max_size,
                       max_latency=max_latency, prefer=prefer, allow_slower=allow_slower)
    _atomic(paths["html"], lambda p: p.write_text(page, encoding="utf-8"))
    return paths


def _one_type_per_column(frame: pd.DataFrame) -> pd.DataFrame:
    """Parquet holds one type per column: a knob whose values mix numbers and words (``rank``:
    ``0.5``, ``cp:0.25``) is written as text there (the CSV keeps each value as it is)."""
    mixed = {c: frame[c].map(lambda v: v if v is None or pd.isna(v) else str(v)) for c in frame.columns
             if frame[c].dtype == object and frame[c].map(type).isin([str]).any()
             and frame[c].map(lambda v: isinstance(v, (int, float)) and not pd.isna(v)).any()}
    return frame.assign(**mixed) if mixed else frame


def render_page(study: optuna.Study, frame: pd.DataFrame, *, storage: str | None = None, max_drop: float = 1.0,
                max_size: int | None = None, max_latency: float | None = None, prefer: str = "size",
                allow_slower: bool = False) -> str:
    """The whole HTML page as a string."""
    import plotly.offline

    done = finished(frame)
    teacher = teacher_point(study, frame) if not frame.empty else None
    record = read_study(study)
    teacher_acc = teacher["accuracy"] if teacher else record.teacher.accuracy
    rec = (recommend(frame, teacher_acc, max_drop, max_size, max_latency, prefer, allow_slower=allow_slower)
           if teacher_acc is not None
           else Recommendation(None, "the study has no teacher accuracy recorded"))
    reference = record.teacher.reference
    measured_on = record.runtime  # None: made before runtimes were recorded (ONNX Runtime, CPU)
    device = (measured_on or {}).get("measured_on")  # a study timed on a device over SSH
    on_device = device and (measured_on or {}).get("accuracy_on") == device  # --device-accuracy
    where = (f"Accuracy and latency of every point are its artifact's, run and timed on the device {device}."
             if on_device else f"Latency of every point is its artifact's, timed on the device {device}; accuracy "
             "is measured here, on the same artifact bytes." if device else
             "Accuracy and latency of every point are its artifact's on this runtime.")
    parts = [f"<h1>autocomp report: {_e(study.study_name)}</h1>", _summary(frame, teacher, reference),
             f"<p class='runtime'>Measured on: {_e(summary(measured_on))}. {_e(where)}</p>"]
    axis = (measured_on or {}).get("label", "ONNX Runtime") + (f" on {device}" if device else "")
    parts.append(_recommendation(rec, study.study_name, storage))
    if done.empty:
        parts.append("<p class='note'>No finished trials yet: nothing to plot.</p>")
    else:
        pdata = pareto_data(frame, rec.trial)
        parts += ["<h2>Pareto front</h2>", "<p class='note'>Every point is measured on its own artifact. Blue: "
                  "Pareto-optimal in accuracy, size and latency together; the dotted staircase is what is best in "
                  "each 2-D view. Hover a point for its trial number and settings.</p>",
                  _figure("pareto-2d", figures.pareto_figure(pdata, axis)),
                  "<h3>All three objectives</h3>", _figure("pareto-3d", figures.pareto3d_figure(pdata)),
                  "<h2>Pareto points</h2>", _pareto_table(frame, rec.trial)]
        parts += ["<h2>Is the search still improving?</h2>", _hypervolume(frame, teacher)]
        policy = policy_data(frame)
        parts.append("<h2>Per-layer policy of the Pareto points</h2>")
        parts.append(_figure("policy", figures.policy_figure(policy)) if policy.knobs and policy.rows
                     else "<p class='note'>No per-layer settings to show.</p>")
        imp = importance_data(study)
        parts.append("<h2>Parameter importance</h2>")
        parts.append(_figure("importance", figures.importance_figure(imp)) + f"<p class='note'>Mean decrease in "
                     f"impurity of a random forest over {imp.n_trials} searched trials (size and latency "
                     "in log scale).</p>" if imp.params else f"<p class='note'>{_e(imp.note)}</p>")
    parts.append(_profile(record.profile, frame))
    parts.append(_failures(frame))
    head = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>autocomp report: "
            f"{_e(study.study_name)}</title><style>{CSS}</style>"
            f"<script type='text/javascript'>{plotly.offline.get_plotlyjs()}</script></head><body>")
    return head + "\n".join(parts) + "</body></html>"


def _e(text: Any) -> str:
    return html.escape(str(text))


def _figure(name: str, fig: Any) -> str:
    div = fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"fig-{name}", config=PLOT_CONFIG)
    return f"<div class='figure' data-figure='{name}'>{div}</div>"


def _summary(frame: pd.DataFrame, teacher: dict[str, float] | None, reference: dict | None = None) -> str:
    counts = frame["state"].value_counts().to_dict() if "state" in frame else {}
    states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())) or "no trials"
    text = f"<p>{len(frame)} trials ({_e(states)}). Tables: <a href='trials.csv'>trials.csv</a>, " \
           "<a href='trials.parquet'>trials.parquet</a>.</p>"
    if teacher:
        text += (f"<p>Teacher: {teacher['accuracy']:.2f}% top-1, {teacher['size_bytes'] / 1024:.1f} KB, "
                 f"{teacher['latency_ms']:.4f} ms.</p>")
        if reference:
            text += (f"<p class='note'>Latency: {teacher['latency_ms']:.4f} ms is the teacher's reference time, "
                     f"the median of {reference.get('runs', '?')} runs over at least "
                     f"{reference.get('min_seconds', 0):g} s (interquartile range {reference.get('q1_ms', 0):.4f}-"
                     f"{reference.get('q3_ms', 0):.4f} ms), taken once for the study. Every point's latency is its "
                     "ratio to the teacher, timed interleaved with it in shuffled rounds, times this number; where "
                     "the ratio's spread (interquartile range of the rounds) contains 1, the ratio is exactly 1: "
                     "a difference inside the measured spread is not called faster.</p>")
    return text


def _recommendation(rec: Recommendation, study_name: str, storage: str | None) -> str:
    body = f"<h2>Recommendation</h2><div class='rec'><p>{_e(rec.reason)}</p>"
    if rec.trial is not None:
        cmd = export_command(storage or STORAGE_PLACEHOLDER, study_name, rec.trial)
        body += f"<p>Export it with:</p><pre>{_e(cmd)}</pre>"
        if storage is None:
            body += f"<p class='note'>Put the study's storage URL in place of {STORAGE_PLACEHOLDER}.</p>"
    return body + "</div>"


def _pareto_table(frame: pd.DataFrame, recommended: int | None) -> str:
    table = pareto_frame(frame)
    if table.empty:
        return "<p class='note'>No Pareto points.</p>"
    table.insert(1, "", ["recommended" if t == recommended else "" for t in table["trial"]])
    return table.to_html(index=False, na_rep="", classes="dataframe pareto")


def _hypervolume(frame: pd.DataFrame, teacher: dict[str, float] | None) -> str:
    if teacher is None:
        return "<p class='note'>No teacher measurement in the study: no reference point for the hypervolume.</p>"
    ref = reference_point(teacher)
    history = hypervolume_history(frame, ref)
    note = (f"<p class='note'>Volume dominated by the finished trials inside the box from the reference "
            f"point (teacher accuracy - {ACCURACY_MARGIN:g} = {ref[0]:.2f}%, teacher size {ref[1] / 1024:.1f} KB, "
            f"teacher latency {ref[2]:.4f} ms) to the ideal (100%, 0 bytes, 0 ms). A flat tail means recent "
            "trials found nothing better.</p>")
    if not history.trial:
        return note
    return _figure("hypervolume", figures.hypervolume_figure(history)) + note


def _profile(record: Mapping[str, Any] | None, frame: pd.DataFrame) -> str:
    """The per-layer profile: what each value does alone, what was dropped, predicted vs measured."""
    if not record:
        return f"<h2>Per-layer profile</h2><p class='note profile-none'>{_e(profile.NO_PROFILE)}</p>"
    info = profile.sensitivity_data(record)
    parts = ["<h2>Per-layer profile</h2>", profile.intro_html(record, info, frame)]
    if info.layers:
        parts.append(_figure("sensitivity", figures.sensitivity_figure(info)))
    parts += [profile.dropped_html(record), "<h3>Seeded plans: predicted vs measured</h3>"]
    seeded = profile.seeded_frame(frame)
    if seeded.empty:
        return "\n".join([*parts, f"<p class='note'>{_e(profile.NO_SEEDS)}</p>"])
    proxy = profile.proxy_data(frame)
    parts.append(f"<p class='note'>{_e(profile.SEEDED_NOTE)} {_e(profile.trust_line(proxy))}</p>")
    if proxy.trial:
        parts.append(_figure("proxy", figures.proxy_figure(proxy)))
    parts.append(profile.table_html(seeded, "seeded"))
    return "\n".join(parts)


def _failures(frame: pd.DataFrame) -> str:
    if frame.empty or "state" not in frame:
        return ""
    bad = frame[frame["state"].isin(["FAIL", "PRUNED"])]
    if bad.empty:
        return ""
    table = bad[["trial", "state", "fail_reason"]].rename(columns={"fail_reason": "reason"}).tail(MAX_FAILURES)
    more = ""
    if len(bad) > MAX_FAILURES:
        more = f"<p class='note'>The last {MAX_FAILURES} shown; all are in trials.csv.</p>"
    return f"<h2>Failed and stopped trials ({len(bad)})</h2>" + more + table.to_html(index=False, classes="dataframe")


def _atomic(path: Path, write: Callable[[Path], Any]) -> None:
    # Per process: workers sharing a run dir finish together. A failed write leaves no .part.
    atomic_write(path, write, part=f".{os.getpid()}.part")
