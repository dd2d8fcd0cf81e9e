"""Study -> pandas DataFrame: one row per trial, objectives, metrics and the Plan's settings.

The frame is the single source every table, plot and the recommendation read, so the numbers
in ``trials.csv`` are the numbers in the storage (objective values come from ``trial.values``,
never recomputed).

Example::

    frame = trials_frame(study)
    frame.loc[frame["pareto"], ["trial", "accuracy", "size_bytes", "latency_ms"]]
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import optuna
import pandas as pd

from autocomp.methods.registry import knobs
from autocomp.study.pareto import OBJECTIVES, front_trials, is_feasible, superseded
from autocomp.study.records import plan_layers, read_study, read_trial

OBJECTIVE_COLUMNS = list(OBJECTIVES)
_INT_COLUMNS = ("size_bytes", "params", "nonzero_params", "macs", "promoted_from", "predicted_size_bytes")
PREDICTED = ("kl", "size_bytes", "latency_ratio")  # a seeded plan's prediction: columns ``predicted_{name}``


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial, in trial order.

    Columns: ``trial, state, baseline, seeded, promoted_from, superseded, pareto, feasible``
    (``seeded``: the budget, ``size`` or ``latency``, of a plan the profile seeded;
    ``promoted_from``: the trial whose Plan this one re-ran with a longer fine-tune;
    ``superseded``: the other trial of its Plan, promotion or original, stands for it on the
    front and in the recommendation: ``pareto.superseded``), the objectives, ratios to the teacher
    (``size_ratio``; ``latency_ratio``, the ratio the latency objective used, with the measured
    ``latency_ratio_measured`` and its spread ``latency_ratio_low``/``_high``), the stored
    metrics (``measured_latency_ms`` and ``teacher_latency_ms``: both medians of the trial's
    interleaved timing; ``teacher_reference_ms``: the study's reference), ``duration_s``,
    ``seconds.<stage>``, ``fail_reason``, a seeded plan's ``seeded_limit`` and the profile's
    ``predicted_kl|size_bytes|latency_ratio`` and ``untrained_kl`` (only in studies with seeded trials), per-layer
    settings ``{layer}.{knob}`` (layers in model order) and ``distill.*``. ``bits`` is empty
    where the layer stays float32.
    """
    trials = study.get_trials(deepcopy=False)
    pareto, left_out = {t.number for t in front_trials(trials)}, superseded(trials)
    teacher = read_study(study).teacher
    rows = [_row(t, pareto, left_out, teacher.size_bytes, teacher.accuracy) for t in trials]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in ["trial", "state", *OBJECTIVE_COLUMNS]})
    front = [c for c in frame.columns if not _is_setting(c)]
    layers = layer_order(trials)
    settings = [f"{layer}.{knob}" for layer in layers for knob in knobs() if f"{layer}.{knob}" in frame]
    rest = [c for c in frame.columns if _is_setting(c) and c not in settings]
    frame = frame[front + settings + rest]
    for col in (*(c for c in _INT_COLUMNS if c in frame), *(c for c in frame.columns if c.endswith(".bits"))):
        try:  # nullable integers: sizes and bit widths print as 12345 and 4, not 12345.0 and 4.0
            frame[col] = pd.array(frame[col].tolist(), dtype="Int64")
        except (TypeError, ValueError):  # a non-integral value from a custom metric: keep it as stored
            pass
    for col in ("baseline", "seeded", "fail_reason", "state"):
        frame[col] = frame[col].fillna("").astype(str)
    return frame


def _row(t: optuna.trial.FrozenTrial, pareto: set[int], left_out: set[int], teacher_bytes: float | None,
         teacher_acc: float | None) -> dict[str, Any]:
    rec = read_trial(t)
    metrics = rec.metrics
    values = t.values if t.values and len(t.values) == 3 else None
    row: dict[str, Any] = {
        "trial": t.number,
        "state": t.state.name,
        "baseline": rec.baseline or "",
        "seeded": (rec.seeded or {}).get("budget") or "",
        "promoted_from": rec.promoted_from,
        "superseded": t.number in left_out,
        "pareto": t.number in pareto,
        "feasible": is_feasible(t),
        "accuracy": values[0] if values else math.nan,
        "size_bytes": _int(values[1]) if values else None,
        "latency_ms": values[2] if values else math.nan,
    }
    size = row["size_bytes"]
    row["drop"] = teacher_acc - row["accuracy"] if teacher_acc is not None else math.nan
    row["size_ratio"] = size / teacher_bytes if size is not None and teacher_bytes else math.nan
    # The ratio the objective used (older studies: recomputed in ``records``), for finished trials.
    row["latency_ratio"] = rec.latency.ratio if values and rec.latency.ratio is not None else math.nan
    row["latency_ratio_measured"] = metrics.get("latency_ratio")
    row["latency_ratio_low"] = metrics.get("latency_ratio_low")
    row["latency_ratio_high"] = metrics.get("latency_ratio_high")
    row["measured_latency_ms"] = metrics.get("latency_ms")
    for key in ("latency_p90_ms", "teacher_latency_ms", "params", "nonzero_params", "macs"):
        row[key] = metrics.get(key)
    row["teacher_reference_ms"] = rec.latency.reference_ms
    row["eager_latency_ms"] = rec.latency.eager_ms
    row["duration_s"] = t.duration.total_seconds() if t.duration is not None else math.nan
    row["datetime_start"] = t.datetime_start
    for stage, sec in rec.seconds.items():
        row[f"seconds.{stage}"] = sec
    row["fail_reason"] = rec.failure or ""
    row.update(_prediction(rec.seeded))
    if rec.plan is not None:
        for layer, lp in rec.plan.layers.items():
            for knob, value in lp.to_dict().items():
                row[f"{layer}.{knob}"] = value
        for knob, value in vars(rec.plan.distill).items():
            row[f"distill.{knob}"] = value
        row["quant_mode"] = rec.plan.quant_mode
    return row


def _prediction(seeded: Mapping[str, Any] | None) -> dict[str, Any]:
    """A seeded plan's budget limit and the profile's prediction for it (empty for other trials)."""
    if not seeded:
        return {}
    predicted = seeded.get("predicted") or {}
    return {"seeded_limit": seeded.get("limit"), **{f"predicted_{k}": predicted.get(k) for k in PREDICTED},
            "untrained_kl": (seeded.get("untrained") or {}).get("kl")}


def _int(value: float) -> float | None:
    """Bytes are whole numbers: store them as ints; anything else stays exactly as stored."""
    if not math.isfinite(value):
        return None
    return int(value) if float(value).is_integer() else value


def _is_setting(col: str) -> bool:
    return col.endswith(tuple("." + k for k in knobs())) or col.startswith("distill.") or col == "quant_mode"


def layer_order(trials: list[optuna.trial.FrozenTrial]) -> list[str]:
    """Layers in model order: the order the sampler drew their parameters (Optuna keeps it),
    then any layer only a Plan names, in natural order (``features.2`` before ``features.10``)."""
    order: dict[str, None] = {}
    table = knobs()
    for t in trials:
        for name in t.distributions:
            layer, _, knob = name.rpartition(".")
            if knob in table and layer:
                order.setdefault(layer, None)
    extra: set[str] = set()
    for t in trials:
        extra.update(plan_layers(t))
    return list(order) + sorted(extra - set(order), key=_natural)


def _natural(name: str) -> list[Any]:
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", name) if p]


def setting_columns(columns: Iterable[str], knob: str) -> list[str]:
    """``{layer}.{knob}`` names among a frame's columns (or a row's index), in model order."""
    return [c for c in columns if c.endswith("." + knob) and not c.startswith("distill.")]


def teacher_point(study: optuna.Study, frame: pd.DataFrame) -> dict[str, float] | None:
    """The teacher's accuracy, artifact bytes and latency: the study's attrs, else its baseline trial.

    Latency is the study's reference time (``teacher_reference_ms``, the number every trial's
    latency ratio multiplies), else the ``teacher`` baseline trial's, else the median of the
    teacher timings each trial records beside its own. None when nothing is known.
    """
    known = read_study(study).teacher
    done = frame[frame["state"] == "COMPLETE"] if "state" in frame else frame
    row = done[done["baseline"] == "teacher"] if "baseline" in done else done.iloc[0:0]
    first = row.iloc[0] if not row.empty else None
    acc = known.accuracy if known.accuracy is not None else first["accuracy"] if first is not None else None
    size = known.size_bytes if known.size_bytes is not None else first["size_bytes"] if first is not None else None
    if known.reference_ms is not None:
        lat = float(known.reference_ms)
    elif first is not None:
        lat = float(first["latency_ms"])
    elif "teacher_latency_ms" in done and done["teacher_latency_ms"].notna().any():
        lat = float(done["teacher_latency_ms"].median())
    else:
        lat = None
    if acc is None or size is None or lat is None:
        return None
    return {"accuracy": float(acc), "size_bytes": float(size), "latency_ms": lat}


def plan_summary(row: Mapping[str, Any]) -> str:
    """A short human line for a trial's settings (hover text and tables); ``row`` is a frame row
    (a Series or a ``to_dict("records")`` dict)."""
    if isinstance(row, pd.Series):
        row = row.to_dict()
    if row.get("baseline"):
        return f"baseline: {row['baseline']}"
    keys = list(row)
    parts = []
    for name, knob in knobs().items():
        cols = setting_columns(keys, name)
        active = [row[c] for c in cols if pd.notna(row[c]) and knob.active(row[c])]
        if not active:
            continue
        mean = sum(knob.number(v) for v in active) / len(active)
        if knob.kind == "bits":  # "2/4 quantized ~5.0b": how many layers, and their mean width
            parts.append(f"{len(active)}/{len(cols)} quantized ~{mean:.1f}b")
        else:  # a knob's words name their method: "3 rank kept 0.42 (cp, tucker2)"
            words = sorted({v.partition(":")[0] for v in active if isinstance(v, str)})
            parts.append(f"{len(active)} {knob.label or name} {mean:.2f}" + (f" ({', '.join(words)})" if words else ""))
    temperature = row.get("distill.temperature")
    if temperature is not None and pd.notna(temperature):
        parts.append(f"T={temperature:.1f}")
    return ", ".join(parts) or "uncompressed"


def ratio_text(row: Mapping[str, Any]) -> str:
    """The measured latency ratio and its spread, e.g. ``0.62 (0.60-0.64)``; empty when not measured."""
    median, low, high = (row.get(k) for k in ("latency_ratio_measured", "latency_ratio_low", "latency_ratio_high"))
    if any(v is None or pd.isna(v) for v in (median, low, high)):
        return ""
    return f"{median:.2f} ({low:.2f}-{high:.2f})"


def latency_words(row: Mapping[str, Any]) -> str:
    """How the report says a point's latency compares with the teacher's, from the stored numbers.

    Faster or slower only when the objective's ratio left 1 (its spread excludes 1); otherwise
    "as fast as the teacher within the measured spread". Example: ``0.62x the teacher, faster
    (measured 0.62, spread 0.60-0.64)``.
    """
    used = row.get("latency_ratio")
    if used is None or pd.isna(used):
        return ""
    median, low, high = (row.get(k) for k in ("latency_ratio_measured", "latency_ratio_low", "latency_ratio_high"))
    known = not any(v is None or pd.isna(v) for v in (median, low, high))
    detail = f" (measured {median:.2f}, spread {low:.2f}-{high:.2f})" if known else ""
    if used == 1.0:
        return f"as fast as the teacher within the measured spread{detail}"
    return f"{used:.2f}x the teacher, {'faster' if used < 1.0 else 'slower'}{detail}"


def pareto_frame(source: optuna.Study | pd.DataFrame) -> pd.DataFrame:
    """The Pareto points, most accurate first, with size and latency as ratios to the teacher.

    ``latency x`` is the ratio the objective used; ``measured x (spread)`` the interleaved
    median ratio with its spread (a point is only faster than the teacher when the whole
    spread is below 1).
    """
    frame = trials_frame(source) if isinstance(source, optuna.Study) else source
    if frame.empty or "pareto" not in frame:
        return pd.DataFrame()
    front = frame[frame["pareto"]].sort_values(["accuracy", "size_bytes", "trial"], ascending=[False, True, True])
    out = pd.DataFrame({
        "trial": front["trial"],
        "accuracy %": front["accuracy"].round(2),
        "drop": front["drop"].round(2),
        "size KB": (front["size_bytes"].astype(float) / 1024).round(1),
        "size x": front["size_ratio"].round(3),
        "latency ms": front["latency_ms"].round(4),
        "latency x": front["latency_ratio"].round(2),
        "measured x (spread)": [ratio_text(r) for r in front.to_dict("records")],
        "settings": [plan_summary(r) for r in front.to_dict("records")],
    })
    marks = {"seeded": origin_text(front, "seeded"), "promoted from": origin_text(front, "promoted_from")}
    for name, column in marks.items():
        if any(column):  # only in studies that seeded or promoted a point of the front
            out.insert(out.columns.get_loc("settings"), name, column)
    return out.reset_index(drop=True)


def origin_text(frame: pd.DataFrame, column: str) -> list[str]:
    """Per row, where a point's plan came from: ``size budget`` for a seeded plan (``column``
    ``seeded``), ``#12`` for a promoted re-run of trial 12 (``promoted_from``); empty otherwise
    (and for frames without the column)."""
    if column not in frame:
        return [""] * len(frame)
    values = frame[column].tolist()
    if column == "seeded":
        return [f"{v} budget" if isinstance(v, str) and v else "" for v in values]
    return [f"#{int(v)}" if v is not None and pd.notna(v) else "" for v in values]
