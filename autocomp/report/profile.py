"""The per-layer profile in the report: what each value does alone, what was dropped, and how
far the profile's predictions held for the plans it seeded.

The profile (``records.read_study(study).profile``, measured by ``autocomp.study.profile``)
applies each value the space offers to one layer alone, exports the whole model and measures
that artifact without a fine-tune: KL divergence from the teacher's outputs (damage), bytes
beside the teacher's file and latency beside the teacher's. The data steps here are plain
lists and frames, tested without drawing; ``figures.py`` draws them and ``html.py`` puts the
section together.

Example::

    info = sensitivity_data(read_study(study).profile)
    info.columns        # ["sparsity=0.2", ..., "bits=4", ...]
    seeded_frame(trials_frame(study))   # predicted vs measured, one row per seeded trial
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import pandas as pd

from autocomp.methods.registry import knobs
from autocomp.report.frame import ratio_text

KL_FLOOR = 1e-6  # nats: smaller damage is drawn (log scale) and written as this
NO_PROFILE = ("No per-layer profile in this study (searched with --no-profile, or made before the profile "
              "was measured): nothing was dropped or seeded by it.")


class Sensitivity(NamedTuple):
    """Layers (rows, model order) x ``knob=value`` (columns); None where a layer was not offered the value."""

    layers: list[str]
    columns: list[str]
    kl: list[list[float | None]]  # nats
    saved_kb: list[list[float | None]]  # teacher's artifact minus this one's, KB (negative: larger)
    latency: list[list[float | None]]  # median ratio to the teacher
    text: list[list[str]]  # hover text per cell
    dropped: list[list[bool]]  # the value was removed from the space


class Proxy(NamedTuple):
    """Finished seeded trials: the profile's prediction beside the measurement, one entry each."""

    trial: list[int]
    budget: list[str]
    predicted_kl: list[float]
    drop: list[float]  # measured accuracy drop, points
    predicted_kb: list[float]
    size_kb: list[float]
    predicted_latency: list[float]  # ratio to the teacher
    latency: list[float]  # measured median ratio
    text: list[str]


def _value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _columns(entries: list[Mapping[str, Any]]) -> list[tuple[str, Any]]:
    """``(knob, value)`` pairs: knobs in the registry's order (unknown ones after), values ascending."""
    order = {name: i for i, name in enumerate(knobs())}
    pairs = {(e["knob"], e["value"]) for e in entries}
    table = knobs()
    return sorted(pairs, key=lambda kv: (order.get(kv[0], len(order)), kv[0], isinstance(kv[1], str),
                                         table[kv[0]].number(kv[1]) if kv[0] in table else 0.0, str(kv[1])))


def _saved_words(saved: int, teacher_bytes: float | None) -> str:
    share = f" ({abs(saved) / teacher_bytes:.1%} of the teacher's file)" if teacher_bytes else ""
    if saved >= 0:
        return f"saves {saved:,} bytes{share}"
    return f"adds {-saved:,} bytes{share}"


def _latency_words(latency: Any) -> str:
    if not latency:
        return "latency not timed"
    median, low, high = latency
    return f"latency {median:.2f}x the teacher (spread {low:.2f}-{high:.2f})"


def _cell_text(e: Mapping[str, Any], teacher_bytes: float | None, why: str | None) -> str:
    lines = [f"layer {e['layer']}: {e['knob']}={_value(e['value'])} alone",
             f"KL {e['kl']:.3g} nats; top-1 kept on {e['agreement']:.1f}% of samples",
             _saved_words(-int(e["bytes"]), teacher_bytes), _latency_words(e.get("latency"))]
    if why:
        lines.append(f"dropped from the space: {why}")
    return "<br>".join(html.escape(line, quote=False) for line in lines)


def sensitivity_data(profile: Mapping[str, Any]) -> Sensitivity:
    """The profile's entries as layer x ``knob=value`` matrices of damage, bytes saved and latency."""
    entries = list(profile.get("entries") or [])
    layers = list(dict.fromkeys(str(e["layer"]) for e in entries))
    pairs = _columns(entries)
    where = {pair: j for j, pair in enumerate(pairs)}
    why = {(d["param"], d["value"]): d["why"] for d in profile.get("dropped") or []}
    teacher_bytes = profile.get("teacher_bytes")
    shape = [[None] * len(pairs) for _ in layers]
    kl, saved, lat = ([row[:] for row in shape] for _ in range(3))
    text = [[""] * len(pairs) for _ in layers]
    dropped = [[False] * len(pairs) for _ in layers]
    for e in entries:
        i, j = layers.index(str(e["layer"])), where[(e["knob"], e["value"])]
        reason = why.get((e.get("param") or f"{e['layer']}.{e['knob']}", e["value"]))
        kl[i][j] = float(e["kl"])
        saved[i][j] = -float(e["bytes"]) / 1024
        lat[i][j] = float(e["latency"][0]) if e.get("latency") else None
        text[i][j] = _cell_text(e, teacher_bytes, reason)
        dropped[i][j] = reason is not None
    return Sensitivity(layers, [f"{k}={_value(v)}" for k, v in pairs], kl, saved, lat, text, dropped)


def dropped_frame(profile: Mapping[str, Any]) -> pd.DataFrame:
    """``param, value, why``: the values the profile removed from the space, in profile order."""
    rows = [{"param": d["param"], "value": _value(d["value"]), "why": d["why"]} for d in profile.get("dropped") or []]
    return pd.DataFrame(rows, columns=["param", "value", "why"])


def failed_frame(profile: Mapping[str, Any]) -> pd.DataFrame:
    """Values whose artifact could not be built or run: unmeasured, so kept in the space and never seeded."""
    rows = [{"param": f"{f['layer']}.{f['knob']}", "value": _value(f["value"]), "why": f["why"]}
            for f in profile.get("failed") or []]
    return pd.DataFrame(rows, columns=["param", "value", "why"])


def _seeded(frame: pd.DataFrame) -> pd.DataFrame:
    if "seeded" not in frame:
        return frame.iloc[0:0]
    return frame[frame["seeded"].fillna("").astype(str) != ""].sort_values("trial")


def _promotions(frame: pd.DataFrame) -> dict[int, list[str]]:
    """Trial -> ``#N (drop D)`` for each promoted re-run of it."""
    out: dict[int, list[str]] = {}
    if "promoted_from" not in frame:
        return out
    for r in frame[frame["promoted_from"].notna()].to_dict("records"):
        drop = f" (drop {r['drop']:.2f})" if r["state"] == "COMPLETE" and pd.notna(r.get("drop")) else \
            f" ({r['state'].lower()})"
        out.setdefault(int(r["promoted_from"]), []).append(f"#{int(r['trial'])}{drop}")
    return out


def _limit_text(budget: str, limit: Any) -> str:
    if limit is None or pd.isna(limit):
        return ""
    return f"<= {limit / 1024:.1f} KB" if budget == "size" else f"<= {limit:.2f}x"


def _measured_latency(row: Mapping[str, Any]) -> float:
    """The measured median ratio to the teacher (the objective's ratio where the median is not stored)."""
    for key in ("latency_ratio_measured", "latency_ratio"):
        value = row.get(key)
        if value is not None and pd.notna(value):
            return float(value)
    return math.nan


def _seed_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Each seeded trial's prediction and measurement, unrounded (NaN where it did not finish)."""
    promoted, rows = _promotions(frame), []
    for r in _seeded(frame).to_dict("records"):
        done = r["state"] == "COMPLETE"
        rows.append({"trial": int(r["trial"]), "state": r["state"], "budget": r["seeded"],
                     "limit": _limit_text(r["seeded"], r.get("seeded_limit")),
                     "predicted_kl": _number(r.get("predicted_kl")), "untrained_kl": _number(r.get("untrained_kl")),
                     "drop": _number(r["drop"]) if done else math.nan,
                     "predicted_bytes": _number(r.get("predicted_size_bytes")),
                     "size_bytes": _number(r.get("size_bytes")) if done else math.nan,
                     "predicted_latency": _number(r.get("predicted_latency_ratio")),
                     "latency": _measured_latency(r) if done else math.nan, "spread": ratio_text(r) if done else "",
                     "promoted": ", ".join(promoted.get(int(r["trial"]), []))})
    return rows


def _number(value: Any) -> float:
    return float(value) if value is not None and pd.notna(value) else math.nan


def seeded_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per seeded trial: its budget, the profile's prediction and what the trial measured.

    The prediction adds the profile's single-layer numbers (no fine-tune); ``untrained KL`` is
    the whole plan's own file before any fine-tune (what chose it among the candidates); the
    measurement is the trial's artifact after its fine-tune. ``promoted as`` names re-runs of the same Plan
    with a longer fine-tune.
    """
    rows = _seed_rows(frame)
    return pd.DataFrame([{
        "trial": r["trial"], "state": r["state"], "budget": r["budget"], "limit": r["limit"],
        "predicted KL": r["predicted_kl"], "untrained KL": r["untrained_kl"], "measured drop": round(r["drop"], 2),
        "predicted KB": round(r["predicted_bytes"] / 1024, 1), "measured KB": round(r["size_bytes"] / 1024, 1),
        "size measured/predicted": round(r["size_bytes"] / r["predicted_bytes"], 2) if r["predicted_bytes"] > 0
        else math.nan,
        "predicted latency x": round(r["predicted_latency"], 3),
        "measured latency x (spread)": r["spread"] or ("" if math.isnan(r["latency"]) else f"{r['latency']:.2f}"),
        "promoted as": r["promoted"]} for r in rows])


def proxy_data(frame: pd.DataFrame) -> Proxy:
    """Finished seeded trials with a prediction, for the predicted-vs-measured plots."""
    rows = [r for r in _seed_rows(frame) if r["state"] == "COMPLETE" and math.isfinite(r["predicted_kl"])]
    text = [f"trial {r['trial']} ({r['budget']} budget {r['limit']})<br>predicted KL {r['predicted_kl']:.3g}, "
            f"measured drop {r['drop']:.2f} points<br>size {r['predicted_bytes'] / 1024:.1f} KB predicted, "
            f"{r['size_bytes'] / 1024:.1f} KB measured<br>latency {r['predicted_latency']:.2f}x predicted, "
            f"{r['latency']:.2f}x measured" for r in rows]
    return Proxy([r["trial"] for r in rows], [r["budget"] for r in rows],
                 [max(r["predicted_kl"], KL_FLOOR) for r in rows], [r["drop"] for r in rows],
                 [r["predicted_bytes"] / 1024 for r in rows], [r["size_bytes"] / 1024 for r in rows],
                 [r["predicted_latency"] for r in rows], [r["latency"] for r in rows], text)


def trust_line(data: Proxy) -> str:
    """How well the predictions held, in one sentence (empty without finished seeded trials)."""
    if not data.trial:
        return ""
    parts = []
    drops = pd.Series(data.drop)
    if len(data.trial) >= 3 and drops.nunique() > 1 and len(set(data.predicted_kl)) > 1:
        rho = pd.Series(data.predicted_kl).rank().corr(drops.rank())
        parts.append(f"rank correlation of predicted damage with the measured accuracy drop {rho:+.2f}")
    else:
        parts.append("too few distinct drops to rank predicted damage against")
    for name, pred, got in (("size", data.predicted_kb, data.size_kb),
                            ("latency", data.predicted_latency, data.latency)):
        ratios = [g / p for p, g in zip(pred, got, strict=True) if p > 0 and math.isfinite(g)]
        if ratios:
            ratios.sort()
            parts.append(f"measured {name} {ratios[0]:.2f}-{ratios[-1]:.2f}x the predicted "
                         f"(median {ratios[len(ratios) // 2]:.2f}x)")
    return f"Over {len(data.trial)} finished seeded trials: " + "; ".join(parts) + "."


def wall_share(profile: Mapping[str, Any], frame: pd.DataFrame) -> tuple[float, float, float]:
    """(profile seconds, the trials' own seconds, the profile's share of both together)."""
    spent = float(profile.get("seconds") or 0.0)
    trials = float(frame["seconds.total"].sum()) if "seconds.total" in frame else 0.0
    total = spent + trials
    return spent, trials, spent / total if total > 0 else 0.0


def intro_html(profile: Mapping[str, Any], info: Sensitivity, frame: pd.DataFrame) -> str:
    """What the profile measured, how to read the chart, and its share of the study's time."""
    spent, trials, share = wall_share(profile, frame)
    n = sum(v is not None for row in info.kl for v in row)
    timed = int(frame["seconds.total"].notna().sum()) if "seconds.total" in frame else 0
    return (f"<p class='note'>Before the search, each value the space offers was applied to one layer alone "
            f"and the whole model exported and measured, with no fine-tune: {n} values on {len(info.layers)} "
            f"layers, damage on {profile.get('samples', '?')} calibration samples. Damage is the KL divergence "
            "of the artifact's outputs from the teacher's (nats, log color); bytes saved and latency are that "
            "artifact's beside the teacher's. A cell marked ✕ was dropped from the space (the table below says "
            "why). Hover a cell for its numbers.</p>"
            f"<p class='profile-time'>The profile took {spent:.1f} s: {share:.1%} of the study's "
            f"{spent + trials:.1f} s of measured work (the profile plus {timed} trials' own time).</p>")


def table_html(table: pd.DataFrame, css: str) -> str:
    return table.to_html(index=False, na_rep="", classes=f"dataframe {css}", float_format=lambda v: f"{v:.4g}")


def dropped_html(profile: Mapping[str, Any]) -> str:
    """What the profile removed from the space and why; values it could not measure, if any."""
    dropped, failed = dropped_frame(profile), failed_frame(profile)
    parts = [f"<h3>Values dropped from the space ({len(dropped)})</h3>",
             table_html(dropped, "dropped") if not dropped.empty else
             "<p class='note'>The profile dropped no value: each one is smaller or faster, and none wrecks the "
             "model alone.</p>"]
    if not failed.empty:
        parts += [f"<h3>Values the profile could not measure ({len(failed)})</h3><p class='note'>Kept in the "
                  "space, never seeded.</p>", table_html(failed, "failed")]
    if unprofiled := profile.get("unprofiled"):
        names = ", ".join(f"{u['layer']}.{u['knob']}" for u in unprofiled)
        parts += [f"<h3>Knobs the profile had no time for ({len(unprofiled)})</h3><p class='note unprofiled'>"
                  f"The profile's share of --timeout ran out before these (the largest layers by bytes and by "
                  f"compute went first). Kept in the space as written, never seeded: {html.escape(names)}.</p>"]
    return "\n".join(parts)


SEEDED_NOTE = ("The prediction adds the profile's one-layer numbers (no fine-tune); the measurement is the "
               "trial's own artifact after its fine-tune. How far they agree is how far to trust the profile.")
NO_SEEDS = "No seeded trials in this study (--seeds 0, or no plan fit the budgets)."
