"""The data step of every plot: plain lists and dicts from the trials frame, no plotly.

Each ``*_data`` function here is tested without drawing; ``figures.py`` turns its output into
a plotly figure and does nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from autocomp.report.frame import KNOBS, plan_summary, setting_columns

DEFAULTS = {"bits": 32, "sparsity": 0.0, "channel_ratio": 0.0, "rank": 1.0}  # a layer left alone
MAX_HOVER_LAYERS = 12


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
    parts = []
    for col in setting_columns(list(row), "bits"):
        layer = col[: -len(".bits")]
        bits, sp, ch, rank = (row.get(f"{layer}.{k}") for k in KNOBS)
        text = f"{int(bits)}b" if _given(bits) else ""
        text += f" sp{sp:.2f}" if _given(sp) and sp > 0 else ""
        text += f" ch{ch:.2f}" if _given(ch) and ch > 0 else ""
        text += f" r{rank:.2f}" if _given(rank) and rank < 1 else ""
        if text:
            parts.append(f"{layer}: {text.strip()}")
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
        lines.append(f"size {size_x:.3f}x, latency {lat_x:.2f}x the teacher")
    lines.append(plan_summary(row))
    per_layer = "" if base == "teacher" else layer_settings_text(row)
    return "<br>".join(lines + ([per_layer] if per_layer else []))


def front_2d(x: list[float], y: list[float]) -> list[int]:
    """Indices of the points no other beats on both (lower x, higher y), by increasing x."""
    order = sorted(range(len(x)), key=lambda i: (x[i], -y[i]))
    best = -math.inf
    keep = []
    for i in order:
        if y[i] > best:
            keep.append(i)
            best = y[i]
    return keep


def _pack(records: list[dict[str, Any]], texts: list[str], keep: list[int]) -> dict[str, list]:
    return {
        "trial": [int(records[i]["trial"]) for i in keep],
        "accuracy": [float(records[i]["accuracy"]) for i in keep],
        "size_kb": [float(records[i]["size_bytes"]) / 1024 for i in keep],
        "latency_ms": [float(records[i]["latency_ms"]) for i in keep],
        "label": [str(records[i]["baseline"]) for i in keep],
        "text": [texts[i] for i in keep],
    }


def pareto_data(frame: pd.DataFrame, recommended: int | None = None) -> dict[str, Any]:
    """Points of the 3-D front and its two projections.

    ``groups``: searched trials on the front, searched trials off it, and the baselines
    (teacher included), each with hover text. ``steps``: per projection (``size_kb``,
    ``latency_ms``), the points that are best in that 2-D view, as a staircase to draw.
    ``recommended``: the recommended trial's point, or None.
    """
    records = finished(frame).to_dict("records")
    texts = [hover_text(r) for r in records]
    base = [bool(r["baseline"]) for r in records]
    front = [bool(r["pareto"]) for r in records]
    n = range(len(records))
    groups = {
        "front": _pack(records, texts, [i for i in n if front[i] and not base[i]]),
        "dominated": _pack(records, texts, [i for i in n if not front[i] and not base[i]]),
        "baselines": _pack(records, texts, [i for i in n if base[i]]),
    }
    everything = _pack(records, texts, list(n))
    steps = {}
    for axis in ("size_kb", "latency_ms"):
        idx = front_2d(everything[axis], everything["accuracy"])
        steps[axis] = {"x": [everything[axis][i] for i in idx], "accuracy": [everything["accuracy"][i] for i in idx],
                       "trial": [everything["trial"][i] for i in idx]}
    rec = None
    if recommended is not None and recommended in everything["trial"]:
        i = everything["trial"].index(recommended)
        rec = {k: [v[i]] for k, v in everything.items()}
    return {"groups": groups, "steps": steps, "recommended": rec}


def policy_data(frame: pd.DataFrame) -> dict[str, Any]:
    """Per-layer settings of the Pareto points, for one heatmap per knob.

    Rows: Pareto points with a Plan, most accurate first. Columns: layers in model order.
    Knobs no trial in the study ever changed are left out. A layer the Plan leaves alone
    shows its default (32 bits, sparsity 0, channel ratio 0, rank 1).
    """
    done = finished(frame)
    layers = [c[: -len(".bits")] for c in setting_columns(frame.columns, "bits")]
    out: dict[str, Any] = {"layers": layers, "trials": [], "rows": [], "knobs": {}}
    if not layers or done.empty:
        return out
    front = done[done["pareto"]].sort_values(["accuracy", "size_bytes", "trial"], ascending=[False, True, True])
    out["trials"] = [int(t) for t in front["trial"]]
    out["rows"] = [f"#{int(r.trial)} {r.baseline + ' ' if r.baseline else ''}({r.accuracy:.1f}%, "
                   f"{r.size_bytes / 1024:.1f} KB)" for r in front.itertuples()]
    for knob in KNOBS:
        cols = [f"{layer}.{knob}" for layer in layers]
        if knob != "bits" and all(c not in frame for c in cols):
            continue
        matrix = [[_value(r.get(c), knob) for c in cols] for r in front.to_dict("records")]
        studied = frame[[c for c in cols if c in frame]]
        varied = studied.notna().any().any() if knob == "bits" else (studied.fillna(DEFAULTS[knob])
                                                                     != DEFAULTS[knob]).any().any()
        if varied:
            out["knobs"][knob] = matrix
    return out


def _value(v: Any, knob: str) -> float:
    return float(DEFAULTS[knob]) if v is None or pd.isna(v) else float(v)
