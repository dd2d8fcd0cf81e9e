"""Recommend the point to ship under the user's limits, say why, and give the command that exports it.

The rule, simple enough to check by hand: among finished trials whose accuracy is at most
``max_drop`` points under the teacher's, whose artifact is at most ``max_size`` bytes and whose
latency is at most ``max_latency`` ms, take the best by ``prefer`` (``size``: smallest artifact,
then lower latency, then higher accuracy; ``latency``: fastest, then smaller, then more
accurate; ``accuracy``: most accurate, then smaller, then faster), ties to the earlier trial.
Such a point is always on the Pareto front: anything dominating it would meet the limits too.

A point the user would ship is not slower than the teacher: unless ``allow_slower`` (the CLI sets
it for ``--max-latency`` or an explicit ``--prefer``), points whose latency ratio (the one the
objective used: exactly 1 when the measured spread contains 1) is over 1 are ruled out whenever a
point within the limits is not slower. A point with no ratio (no latency timed beside the
teacher) is ruled out only by a point known not to be slower, and itself rules out slower ones.
When every point within the limits is slower, the best of them is recommended and the reason
says so. Of a trial and its finished promotion (the same Plan, a longer fine-tune) only the one
that stands on the front is considered (``superseded``: the more accurate), as on the front.

Example::

    rec = recommend(trials_frame(study), teacher_accuracy=98.9, max_drop=1.0)
    print(rec.trial, rec.reason)
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

import numpy as np
import optuna
import pandas as pd

from autocomp.errors import AutocompError
from autocomp.report.frame import latency_words, plan_summary, trials_frame
from autocomp.report.plots import finished
from autocomp.study.records import read_study

PREFERENCES = {  # prefer -> (sort columns, ascending, words)
    "size": (["size_bytes", "latency_ms", "accuracy", "trial"], [True, True, False, True], "smallest artifact"),
    "latency": (["latency_ms", "size_bytes", "accuracy", "trial"], [True, True, False, True], "fastest"),
    "accuracy": (["accuracy", "size_bytes", "latency_ms", "trial"], [False, True, True, True], "most accurate"),
}
SHOW_RULED_OUT = 3
NOT_SLOWER, UNKNOWN, SLOWER = 0, 1, 2  # speed tiers beside the teacher, best first


@dataclass(frozen=True)
class Recommendation:
    trial: int | None
    reason: str
    candidates: list[int] = field(default_factory=list)  # every trial meeting the limits


def _violations(row: pd.Series, teacher_accuracy: float, max_drop: float, max_size: int | None,
                max_latency: float | None) -> list[str]:
    why = []
    drop = teacher_accuracy - row["accuracy"]
    if drop > max_drop + 1e-9:
        why.append(f"drops {drop:.2f} points > {max_drop:g}")
    if max_size is not None and row["size_bytes"] > max_size:
        why.append(f"is {int(row['size_bytes']):,} bytes > {max_size:,}")
    if max_latency is not None and row["latency_ms"] > max_latency:
        why.append(f"takes {row['latency_ms']:.4f} ms > {max_latency:g}")
    return why


def _speed_tiers(frame: pd.DataFrame) -> pd.Series:
    """Each row's tier beside the teacher: NOT_SLOWER (latency ratio <= 1), UNKNOWN (no ratio), SLOWER."""
    ratio = pd.to_numeric(frame["latency_ratio"], errors="coerce") if "latency_ratio" in frame else None
    if ratio is None:
        return pd.Series(UNKNOWN, index=frame.index)
    return pd.Series(np.where(ratio.isna(), UNKNOWN, np.where(ratio > 1.0, SLOWER, NOT_SLOWER)), index=frame.index)


def _speed_words(row: pd.Series) -> str:
    """Why the speed rule set a point aside: ``is 1.32x slower than the teacher (spread 1.28-1.38)``."""
    ratio = row.get("latency_ratio")
    if ratio is None or pd.isna(ratio):
        return "has no latency ratio to the teacher (not timed beside it)"
    low, high = row.get("latency_ratio_low"), row.get("latency_ratio_high")
    known = all(v is not None and pd.notna(v) for v in (low, high))
    return f"is {ratio:.2f}x slower than the teacher" + (f" (spread {low:.2f}-{high:.2f})" if known else "")


def recommend(frame: pd.DataFrame, teacher_accuracy: float, max_drop: float = 1.0, max_size: int | None = None,
              max_latency: float | None = None, prefer: str = "size", allow_slower: bool = False) -> Recommendation:
    """The best finished trial within the limits (see the module docstring for the rule).

    ``allow_slower``: let a point slower than the teacher win over one that is not (the CLI sets
    it when the user gave ``--max-latency`` or ``--prefer``).
    """
    if prefer not in PREFERENCES:
        raise AutocompError(f"prefer must be one of {', '.join(PREFERENCES)}, got {prefer!r}")
    columns, ascending, words = PREFERENCES[prefer]
    done = finished(frame)
    if "superseded" in done:  # the other trial of its Plan stands for it (``pareto.superseded``)
        done = done[~done["superseded"].astype(bool)]
    done = done.reset_index(drop=True)
    if done.empty:
        return Recommendation(None, "no finished trials")
    done = done.assign(size_bytes=done["size_bytes"].astype(float))
    ranked = done.sort_values(columns, ascending=ascending)
    meets = ranked["accuracy"] >= teacher_accuracy - max_drop - 1e-9
    if max_size is not None:
        meets &= ranked["size_bytes"] <= max_size
    if max_latency is not None:
        meets &= ranked["latency_ms"] <= max_latency
    ok = ranked[meets]
    limits = f"accuracy drop <= {max_drop:g} points" + (f", size <= {max_size:,} bytes" if max_size is not None else "")
    limits += f", latency <= {max_latency:g} ms" if max_latency is not None else ""

    def why(row: pd.Series) -> str:  # a limit it breaks, else the speed rule
        return " and ".join(_violations(row, teacher_accuracy, max_drop, max_size, max_latency)) or _speed_words(row)

    if ok.empty:
        closest = ranked.iloc[0]
        return Recommendation(None, f"no finished trial meets the limits ({limits}); the {words}, trial "
                              f"{int(closest['trial'])}, {why(closest)}; relax the limits or run more trials")
    tiers = _speed_tiers(ok)
    floor = int(tiers.min())
    pool = ok if allow_slower else ok[tiers == floor]
    best = pool.iloc[0]
    ahead = ranked.iloc[: ranked.index.get_loc(best.name)]  # better by `prefer`, but over a limit or slower
    reason = _reason(best, words, limits, teacher_accuracy, (len(ok), len(done), len(ok) - len(pool)),
                     floor if not allow_slower else None)
    if not ahead.empty:
        shown = "; ".join(f"trial {int(r['trial'])} {why(r)}" for _, r in ahead.head(SHOW_RULED_OUT).iterrows())
        more = f" (and {len(ahead) - SHOW_RULED_OUT} more)" if len(ahead) > SHOW_RULED_OUT else ""
        reason += f" Ahead of it by {prefer} but ruled out: {shown}{more}."
    reason += f" Settings: {plan_summary(best)}."
    return Recommendation(int(best["trial"]), reason, [int(t) for t in ok["trial"]])


def _reason(best: pd.Series, words: str, limits: str, teacher_accuracy: float, counts: tuple[int, int, int],
            floor: int | None) -> str:
    """The sentence saying what was picked and why; ``counts``: (meeting the limits, finished, set
    aside as slower); ``floor``: the best speed tier within the limits, None when slower may win."""
    meeting, total, set_aside = counts
    rule = " and not slower than the teacher" if floor == NOT_SLOWER else ""
    text = (
        f"trial {int(best['trial'])} is the {words} within the limits ({limits}){rule}: "
        f"{int(best['size_bytes']):,} bytes"
        + (f" ({best['size_ratio']:.3f}x the teacher)" if pd.notna(best.get("size_ratio")) else "")
        + f", {best['accuracy']:.2f}% accuracy (teacher {teacher_accuracy:.2f}%, drop "
        f"{teacher_accuracy - best['accuracy']:.2f}), {best['latency_ms']:.4f} ms"
        + (f", {latency_words(best)}" if latency_words(best) else "")
        + f". {meeting} of {total} finished trials meet the limits"
    )
    if set_aside:
        text += (f"; {set_aside} of them {'is' if set_aside == 1 else 'are'} set aside as slower than the teacher "
                 "(an explicit --prefer or --max-latency lets them in)")
    if floor == SLOWER:
        text += "; no point within the limits is as fast as the teacher, so this one is slower"
    return text + "."


def export_command(storage: str, study_name: str, trial: int) -> str:
    """The exact ``autocomp export`` command line that rebuilds and writes ``trial``."""
    return shlex.join(["autocomp", "export", "--storage", storage, "--study-name", study_name,
                       "--trial", str(trial), "--out", f"trial_{trial}.acz"])


def recommend_text(study: optuna.Study, storage: str, max_drop: float = 1.0, max_size: int | None = None,
                   max_latency: float | None = None, prefer: str = "size", frame: pd.DataFrame | None = None,
                   allow_slower: bool = False) -> str:
    """The recommendation as printed by ``autocomp report`` and ``autocomp search``."""
    frame = trials_frame(study) if frame is None else frame
    teacher_acc = read_study(study).teacher.accuracy
    if teacher_acc is None:
        return "recommendation: the study has no teacher accuracy recorded yet"
    rec = recommend(frame, teacher_acc, max_drop, max_size, max_latency, prefer, allow_slower)
    if rec.trial is None:
        return f"recommendation: none ({rec.reason})"
    return f"recommendation: {rec.reason}\nexport it with:\n  {export_command(storage, study.study_name, rec.trial)}"
