"""The data step of every plot: typed tuples of plain lists from the trials frame, no plotly.

Each ``*_data`` function here is tested without drawing; ``figures.py`` turns its output into
a plotly figure and does nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import pandas as pd

from autocomp.methods.registry import knobs
from autocomp.report.frame import latency_words, plan_summary, setting_columns
from autocomp.study.pareto import staircase

MAX_HOVER_LAYERS = 12
GROUPS = ("front", "dominated", "baselines")


class Points(NamedTuple):
    """One group of trials, one list entry per trial."""

    trial: list[int]
    accuracy: list[float]
    size_kb: list[float]
    latency_ms: list[float]
    label: list[str]
    text: list[str]


class Staircase(NamedTuple):
    """The points best in one 2-D view (accuracy against ``x``), by increasing ``x``."""

    x: list[float]
    accuracy: list[float]
    trial: list[int]


class ParetoInfo(NamedTuple):
    groups: dict[str, Points]  # GROUPS: searched on the front, searched off it, baselines
    steps: dict[str, Staircase]  # "size_kb" and "latency_ms"
    recommended: Points | None
    promoted: Points | None = None  # re-runs of an earlier trial's Plan with a longer fine-tune


class PolicyInfo(NamedTuple):
    layers: list[str]  # model order
    trials: list[int]  # Pareto points, most accurate first
    rows: list[str]  # their labels
    knobs: dict[str, list[list[float]]]  # knob -> rows x layers; only knobs some trial changed


def finished(frame: pd.DataFrame) -> pd.DataFrame:
    """Complete trials with finite objective values, in trial order."""
    if frame.empty or "state" not in frame:
        return frame.iloc[0:0]
    ok = (frame["state"] == "COMPLETE") & frame["accuracy"].notna() & frame["latency_ms"].notna()
    ok &= frame["size_bytes"].notna()
    ok &= frame["accuracy"].map(math.isfinite) & frame["latency_ms"].map(math.isfinite)
    return frame[ok].sort_values("trial")


def layer_settings_text(row: Mapping[str, Any]) -> str:
    """``conv1: 4b sp0.50 r0.75`` per layer, for hover text (layers left alone are skipped)."""
    table = knobs()
    layers = dict.fromkeys(c.rpartition(".")[0] for name in table for c in setting_columns(list(row), name))
    parts = []
    for layer in layers:
        words = []
        for name, knob in table.items():
            value = row.get(f"{layer}.{name}")
            if _given(value) and knob.active(value):
                words.append(knob.text(value))
        if words:
            parts.append(f"{layer}: {' '.join(words)}")
    if len(parts) > MAX_HOVER_LAYERS:
        parts = parts[:MAX_HOVER_LAYERS] + [f"... {len(parts) - MAX_HOVER_LAYERS} more layers"]
    return "<br>".join(parts)


def _given(value: Any) -> bool:
    return value is not None and bool(pd.notna(value))


def hover_text(row: Mapping[str, Any]) -> str:
    """Trial number, objectives, ratios to the teacher and settings, as plotly hover HTML."""
    base = row.get("baseline") or ""
    lines = [f"trial {int(row['trial'])}" + (f" ({base})" if base else ""),
             f"{row['accuracy']:.2f}% · {row['size_bytes'] / 1024:.1f} KB · {row['latency_ms']:.4f} ms"]
    size_x, lat_x = row.get("size_ratio"), row.get("latency_ratio")
    if _given(size_x) and _given(lat_x):
        lines.append(f"size {size_x:.3f}x the teacher; latency {latency_words(row)}")
    lines += _origin_lines(row)
    lines.append(plan_summary(row))
    per_layer = "" if base == "teacher" else layer_settings_text(row)
    return "<br>".join(lines + ([per_layer] if per_layer else []))


def _origin_lines(row: Mapping[str, Any]) -> list[str]:
    """Where the plan came from: a profile seed (its budget and limit), a promotion (the trial re-run)."""
    lines = []
    budget, source = row.get("seeded"), row.get("promoted_from")
    if isinstance(budget, str) and budget:
        limit = row.get("seeded_limit")
        bound = "" if not _given(limit) else (f" <= {limit / 1024:.1f} KB" if budget == "size" else
                                              f" <= {limit:.2f}x the teacher")
        lines.append(f"seeded by the profile ({budget} budget{bound})")
    if _given(source):
        lines.append(f"promoted from #{int(source)}: its plan re-run with a longer fine-tune")
    return lines


def _points(records: list[dict[str, Any]], texts: list[str], keep: list[int]) -> Points:
    return Points(
        trial=[int(records[i]["trial"]) for i in keep],
        accuracy=[float(records[i]["accuracy"]) for i in keep],
        size_kb=[float(records[i]["size_bytes"]) / 1024 for i in keep],
        latency_ms=[float(records[i]["latency_ms"]) for i in keep],
        label=[str(records[i]["baseline"]) for i in keep],
        text=[texts[i] for i in keep],
    )


def pareto_data(frame: pd.DataFrame, recommended: int | None = None) -> ParetoInfo:
    """Points of the 3-D front and its two projections.

    ``groups``: searched trials on the front, searched trials off it, and the baselines
    (teacher included), each with hover text. ``steps``: per projection (``size_kb``,
    ``latency_ms``), the points that are best in that 2-D view, as a staircase to draw.
    ``recommended``: the recommended trial's point, or None. ``promoted``: the points that
    re-ran an earlier trial's Plan with a longer fine-tune (drawn ringed), or None.
    """
    records = finished(frame).to_dict("records")
    texts = [hover_text(r) for r in records]
    base = [bool(r["baseline"]) for r in records]
    front = [bool(r["pareto"]) for r in records]
    n = range(len(records))
    groups = {
        "front": _points(records, texts, [i for i in n if front[i] and not base[i]]),
        "dominated": _points(records, texts, [i for i in n if not front[i] and not base[i]]),
        "baselines": _points(records, texts, [i for i in n if base[i]]),
    }
    every = _points(records, texts, list(n))
    steps = {}
    for axis in ("size_kb", "latency_ms"):
        xs = getattr(every, axis)
        idx = staircase(xs, every.accuracy)
        steps[axis] = Staircase([xs[i] for i in idx], [every.accuracy[i] for i in idx], [every.trial[i] for i in idx])
    rec = None
    if recommended is not None and recommended in every.trial:
        rec = _points(records, texts, [every.trial.index(recommended)])
    promoted = [i for i in n if _given(records[i].get("promoted_from"))]
    return ParetoInfo(groups, steps, rec, _points(records, texts, promoted) if promoted else None)


def policy_data(frame: pd.DataFrame) -> PolicyInfo:
    """Per-layer settings of the Pareto points, for one heatmap per knob.

    Rows: Pareto points with a Plan, most accurate first. Columns: layers in model order.
    Knobs no trial in the study ever changed are left out. A layer the Plan leaves alone
    shows the knob's no-op (32 bits, sparsity 0, channel ratio 0, rank 1).
    """
    done = finished(frame)
    table = knobs()
    layers = list(dict.fromkeys(c.rpartition(".")[0] for name in table for c in setting_columns(frame.columns, name)))
    if not layers or done.empty:
        return PolicyInfo(layers, [], [], {})
    front = done[done["pareto"]].sort_values(["accuracy", "size_bytes", "trial"], ascending=[False, True, True])
    trials = [int(t) for t in front["trial"]]
    rows = [f"#{int(r['trial'])} {r['baseline'] + ' ' if r['baseline'] else ''}{_from(r)}({r['accuracy']:.1f}%, "
            f"{r['size_bytes'] / 1024:.1f} KB)" for r in front.to_dict("records")]
    matrices = {}
    for name, knob in table.items():
        cols = [f"{layer}.{name}" for layer in layers]
        studied = [c for c in cols if c in frame]
        varied = any(_given(v) and knob.active(v) for c in studied for v in frame[c])
        if varied:
            matrices[name] = [[_shown(r.get(c), knob) for c in cols] for r in front.to_dict("records")]
    return PolicyInfo(layers, trials, rows, matrices)


def _from(row: Mapping[str, Any]) -> str:
    source = row.get("promoted_from")
    return f"from #{int(source)} " if _given(source) else ""


def _shown(value: Any, knob: Any) -> float:
    return knob.display_noop if not _given(value) or not knob.active(value) else knob.number(value)
