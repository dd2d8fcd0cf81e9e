"""Study -> pandas DataFrame: one row per trial, objectives, metrics and the Plan's settings."""

from __future__ import annotations

import optuna
import pandas as pd

from autocomp.plan import Plan

OBJECTIVE_COLUMNS = ["accuracy", "size_bytes", "latency_ms"]


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial; per-layer settings as ``{layer}.{knob}`` columns, globals as ``distill.*``."""
    attrs = study.user_attrs
    pareto = {t.number for t in study.best_trials}
    teacher_bytes = attrs.get("teacher_size_bytes")
    rows = []
    for t in study.trials:
        u = t.user_attrs
        metrics = u.get("metrics", {})
        row = {
            "trial": t.number,
            "state": t.state.name,
            "baseline": u.get("baseline", ""),
            "pareto": t.number in pareto,
            "accuracy": t.values[0] if t.values else None,
            "size_bytes": int(t.values[1]) if t.values else None,
            "latency_ms": t.values[2] if t.values else None,
            "latency_p90_ms": metrics.get("latency_p90_ms"),
            "teacher_latency_ms": metrics.get("teacher_latency_ms"),
            "params": metrics.get("params"),
            "nonzero_params": metrics.get("nonzero_params"),
            "macs": metrics.get("macs"),
            "eager_accuracy": u.get("eager_accuracy"),
            "duration_s": t.duration.total_seconds() if t.duration else None,
            "fail_reason": u.get("fail_reason") or t.system_attrs.get("fail_reason", ""),
        }
        row["size_ratio"] = row["size_bytes"] / teacher_bytes if row["size_bytes"] and teacher_bytes else None
        if row["latency_ms"] is not None and row["teacher_latency_ms"]:
            row["latency_ratio"] = row["latency_ms"] / row["teacher_latency_ms"]
        else:
            row["latency_ratio"] = None
        if "plan" in u:
            plan = Plan.from_dict(u["plan"])
            for layer, lp in plan.layers.items():
                for knob in ("sparsity", "channel_ratio", "bits", "rank"):
                    row[f"{layer}.{knob}"] = getattr(lp, knob)
            for knob, value in vars(plan.distill).items():
                row[f"distill.{knob}"] = value
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=["trial", "state", *OBJECTIVE_COLUMNS])
    return frame


def plan_summary(row: pd.Series) -> str:
    """A short human line for a trial's settings (hover text and tables)."""
    if row.get("baseline"):
        return f"baseline: {row['baseline']}"
    parts = []
    for knob, fmt in (("bits", "{:.0f}b"), ("sparsity", "sp{:.2f}"), ("channel_ratio", "ch{:.2f}"), ("rank", "r{:.2f}")):
        cols = [c for c in row.index if c.endswith("." + knob) and not c.startswith("distill.")]
        vals = [row[c] for c in cols if row[c] is not None and row[c] == row[c]]
        if knob == "rank":
            vals = [v for v in vals if v < 1]
        elif knob != "bits":
            vals = [v for v in vals if v > 0]
        if vals:
            mean = sum(vals) / len(vals)
            parts.append(f"{len(vals)}x " + fmt.format(mean) if knob != "bits" else f"{len(vals)}x ~{mean:.0f}b")
    return ", ".join(parts) or "uncompressed"


def pareto_frame(study: optuna.Study) -> pd.DataFrame:
    """The Pareto points, most accurate first, with ratios to the teacher's artifact."""
    frame = trials_frame(study)
    if frame.empty or "pareto" not in frame:
        return pd.DataFrame()
    front = frame[frame["pareto"]].sort_values(["accuracy", "size_bytes"], ascending=[False, True])
    out = pd.DataFrame({
        "trial": front["trial"],
        "accuracy %": front["accuracy"].round(2),
        "size KB": (front["size_bytes"] / 1024).round(1),
        "size x": front["size_ratio"].round(3),
        "latency ms": front["latency_ms"].round(4),
        "latency x": front["latency_ratio"].round(2),
        "settings": [plan_summary(r) for _, r in front.iterrows()],
    })
    return out.reset_index(drop=True)
