"""Recommend the point to ship under the user's constraints, and the command that exports it."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

import optuna
import pandas as pd

from autocomp.report.frame import plan_summary, trials_frame


@dataclass(frozen=True)
class Recommendation:
    trial: int | None
    reason: str


def recommend(frame: pd.DataFrame, teacher_accuracy: float, max_drop: float = 1.0, max_size: int | None = None,
              max_latency: float | None = None) -> Recommendation:
    """The smallest artifact among finished trials within the limits; ties go to lower latency,
    then higher accuracy, then the earlier trial."""
    done = frame[frame["state"] == "COMPLETE"] if not frame.empty else frame
    if done.empty:
        return Recommendation(None, "no finished trials")
    ok = done[done["accuracy"] >= teacher_accuracy - max_drop - 1e-9]
    if max_size is not None:
        ok = ok[ok["size_bytes"] <= max_size]
    if max_latency is not None:
        ok = ok[ok["latency_ms"] <= max_latency]
    if ok.empty:
        return Recommendation(None, "no finished trial meets the limits; relax them or run more trials")
    best = ok.sort_values(["size_bytes", "latency_ms", "accuracy", "trial"], ascending=[True, True, False, True]).iloc[0]
    reason = (
        f"trial {int(best['trial'])} is the smallest artifact ({int(best['size_bytes'])} bytes"
        + (f", {best['size_ratio']:.3f}x the teacher" if pd.notna(best.get("size_ratio")) else "")
        + f") with accuracy {best['accuracy']:.2f}% (teacher {teacher_accuracy:.2f}%, drop "
        f"{teacher_accuracy - best['accuracy']:.2f} <= {max_drop}) and latency {best['latency_ms']:.4f} ms; "
        f"{len(ok)} of {len(done)} finished trials meet the limits; settings: {plan_summary(best)}"
    )
    return Recommendation(int(best["trial"]), reason)


def recommend_text(study: optuna.Study, storage: str, max_drop: float = 1.0, max_size: int | None = None,
                   max_latency: float | None = None) -> str:
    teacher_acc = study.user_attrs.get("teacher_accuracy")
    if teacher_acc is None:
        return "recommendation: the study has no teacher accuracy recorded yet"
    rec = recommend(trials_frame(study), teacher_acc, max_drop, max_size, max_latency)
    if rec.trial is None:
        return f"recommendation: none ({rec.reason})"
    cmd = shlex.join(["autocomp", "export", "--storage", storage, "--study-name", study.study_name,
                      "--trial", str(rec.trial), "--out", f"trial_{rec.trial}.acz"])
    return f"recommendation: {rec.reason}\nexport it with:\n  {cmd}"
