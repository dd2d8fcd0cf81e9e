"""The report's per-layer profile: the sensitivity chart's data, what was dropped and why, the
seeded plans' predictions beside their measurements, promoted points marked, and a study
without a profile saying so in one line."""

from __future__ import annotations

import json
import re

import optuna
import pandas as pd
import pytest
from report_synthetic import FIGURES, LAYERS, TEACHER, build_study, figures_in, layer_plan, metrics, plan

from autocomp.report import write_report
from autocomp.report.frame import pareto_frame, trials_frame
from autocomp.report.plots import pareto_data, policy_data
from autocomp.report.profile import (
    NO_PROFILE,
    NO_SEEDS,
    dropped_frame,
    failed_frame,
    proxy_data,
    seeded_frame,
    sensitivity_data,
    trust_line,
    wall_share,
)
from autocomp.study import records

PROFILE_SECONDS = 12.5
DROPPED = [{"param": "features.0.sparsity", "value": 0.9, "why": "alone it keeps the teacher's top-1 on 8% of "
            "samples (< 20%)"},
           {"param": "classifier.bits", "value": 8, "why": "not smaller (+120 bytes) and not faster (1.02x the time)"}]


def entry(layer: str, knob: str, value: object, kl: float, saved: int, latency: list[float] | None) -> dict:
    return {"layer": layer, "knob": knob, "param": f"{layer}.{knob}", "value": value, "kl": kl,
            "agreement": 99.0 if kl < 1 else 8.0, "bytes": -saved, "latency": latency}


def profile_record() -> dict:
    entries = [
        entry("features.0", "sparsity", 0.5, 0.01, 2_000, [0.98, 0.95, 1.01]),
        entry("features.0", "sparsity", 0.9, 4.2, 3_500, [0.97, 0.94, 1.0]),
        entry("features.0", "bits", 4, 0.002, 6_000, [1.2, 1.15, 1.25]),
        entry("features.3", "rank", 0.5, 0.3, 9_000, [0.8, 0.78, 0.82]),
        entry("classifier", "bits", 8, 0.0001, -120, [1.02, 0.99, 1.05]),
        entry("classifier", "sparsity", 0.5, 0.05, 1_000, None),
    ]
    return {"version": 1, "samples": 256, "metric": "kl", "teacher_bytes": TEACHER["size_bytes"], "num_classes": 10,
            "layer_bytes": {x: 10_000 for x in LAYERS}, "entries": entries,
            "failed": [{"layer": "features.10", "knob": "rank", "value": 0.25, "why": "RuntimeError: no kernel"}],
            "dropped": DROPPED, "seconds": PROFILE_SECONDS}


SEEDS = {  # trial offset -> (budget, limit, predicted, measured values or None for a failed trial)
    0: ("size", 30_000.0, {"kl": 0.02, "size_bytes": 28_000, "latency_ratio": 0.9}, (97.5, 33_600, 0.046)),
    1: ("size", 30_000.0, {"kl": 0.005, "size_bytes": 24_000, "latency_ratio": 0.6}, (97.9, 25_000, 0.029)),
    2: ("latency", 0.8, {"kl": 0.3, "size_bytes": 70_000, "latency_ratio": 0.78}, (96.0, 71_000, 0.041)),
    3: ("latency", 0.7, {"kl": 0.9, "size_bytes": 60_000, "latency_ratio": 0.7}, None),
}


def add(study: optuna.Study, values: tuple | None, attrs: dict) -> int:
    layers = {x: layer_plan(sparsity=0.5, bits=4) for x in LAYERS}
    user = {"plan": plan(layers), **attrs}
    if values is None:
        trial = optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL,
                                          user_attrs={**user, "fail_reason": "out of memory"})
    else:
        user.update(metrics=metrics(*values), seconds={"total": 2.5})
        trial = optuna.trial.create_trial(values=[values[0], float(values[1]), values[2]], user_attrs=user)
    study.add_trial(trial)
    return len(study.trials) - 1


def profiled_study(n: int = 10, seeds: bool = True) -> tuple[optuna.Study, dict[int, int]]:
    """A synthetic study with a profile, seeded trials and a promotion of the first seed (returns
    ``{seed offset: trial number}``, key ``"promoted"`` for the promotion)."""
    study = build_study(n=n)
    records.write_profile(study, profile_record())
    numbers: dict = {}
    if seeds:
        for i, (budget, limit, predicted, values) in SEEDS.items():
            numbers[i] = add(study, values, records.seed_marks(budget, i, limit, predicted))
        # The promotion: the first seed's plan, fine-tuned longer, more accurate at the same size and time.
        numbers["promoted"] = add(study, (99.5, 33_600, 0.046), records.promotion_marks(numbers[0]))
    return study, numbers


def test_the_sensitivity_chart_is_layers_by_knob_values():
    info = sensitivity_data(profile_record())
    assert info.layers == ["features.0", "features.3", "classifier"]  # profile (model) order
    # knobs in the registry's order, values ascending within a knob
    assert sorted(info.columns) == sorted(["sparsity=0.5", "sparsity=0.9", "bits=4", "bits=8", "rank=0.5"])
    assert info.columns.index("sparsity=0.5") < info.columns.index("sparsity=0.9")
    assert info.columns.index("bits=4") < info.columns.index("bits=8")
    cell = info.layers.index("features.3"), info.columns.index("rank=0.5")
    assert info.kl[cell[0]][cell[1]] == 0.3
    assert info.saved_kb[cell[0]][cell[1]] == pytest.approx(9_000 / 1024)
    assert info.latency[cell[0]][cell[1]] == 0.8
    assert info.kl[cell[0]][info.columns.index("bits=4")] is None  # features.3 was not offered 4 bits
    untimed = info.layers.index("classifier"), info.columns.index("sparsity=0.5")
    assert info.latency[untimed[0]][untimed[1]] is None and "not timed" in info.text[untimed[0]][untimed[1]]
    bad = 0, info.columns.index("sparsity=0.9")
    assert info.dropped[bad[0]][bad[1]] and "dropped from the space: alone it keeps" in info.text[bad[0]][bad[1]]
    larger = info.layers.index("classifier"), info.columns.index("bits=8")
    assert info.dropped[larger[0]][larger[1]] and "adds 120 bytes" in info.text[larger[0]][larger[1]]
    assert sum(map(sum, info.dropped)) == len(DROPPED)


def test_dropped_and_failed_values_are_tables_with_their_reasons():
    dropped = dropped_frame(profile_record())
    assert dropped.to_dict("records") == [{"param": d["param"], "value": f"{d['value']:g}", "why": d["why"]}
                                          for d in DROPPED]
    failed = failed_frame(profile_record())
    assert failed.to_dict("records") == [{"param": "features.10.rank", "value": "0.25",
                                          "why": "RuntimeError: no kernel"}]
    assert dropped_frame({"entries": []}).empty and list(dropped_frame({}).columns) == ["param", "value", "why"]


def test_the_trials_frame_carries_budget_prediction_and_promotion():
    study, numbers = profiled_study()
    frame = trials_frame(study).set_index("trial")
    assert frame.loc[numbers[2], "seeded"] == "latency" and frame.loc[numbers[2], "seeded_limit"] == 0.8
    assert frame.loc[numbers[0], "predicted_size_bytes"] == 28_000 and frame.loc[numbers[1], "predicted_kl"] == 0.005
    assert frame.loc[numbers["promoted"], "promoted_from"] == numbers[0]
    assert str(frame["promoted_from"].dtype) == "Int64" and frame["promoted_from"].notna().sum() == 1
    assert frame.index[frame["superseded"]].tolist() == [numbers[0]]  # its more accurate promotion stands for it
    assert (frame["seeded"] != "").sum() == len(SEEDS) and frame.loc[0, "seeded"] == ""


def test_seeded_plans_show_predicted_beside_measured():
    study, numbers = profiled_study()
    frame = trials_frame(study)
    table = seeded_frame(frame).set_index("trial")
    assert list(table.index) == [numbers[i] for i in SEEDS]
    first = table.loc[numbers[0]]
    assert first["budget"] == "size" and first["limit"] == "<= 29.3 KB"
    assert first["predicted KL"] == 0.02 and first["measured drop"] == pytest.approx(TEACHER["accuracy"] - 97.5)
    assert first["predicted KB"] == round(28_000 / 1024, 1) and first["measured KB"] == round(33_600 / 1024, 1)
    assert first["size measured/predicted"] == 1.2
    assert first["predicted latency x"] == 0.9
    assert first["promoted as"] == f"#{numbers['promoted']} (drop {TEACHER['accuracy'] - 99.5:.2f})"
    assert table.loc[numbers[2], "limit"] == "<= 0.80x"
    failed = table.loc[numbers[3]]
    assert failed["state"] == "FAIL" and pd.isna(failed["measured KB"]) and failed["measured latency x (spread)"] == ""
    proxy = proxy_data(frame)
    assert proxy.trial == [numbers[i] for i in (0, 1, 2)]  # finished seeds only
    assert proxy.size_kb[0] == pytest.approx(33_600 / 1024) and proxy.predicted_latency[2] == 0.78
    line = trust_line(proxy)
    assert line.startswith("Over 3 finished seeded trials: rank correlation of predicted damage with the measured "
                           "accuracy drop +1.00")
    assert "measured size 1.01-1.20x the predicted (median 1.04x)" in line


def test_the_profile_share_of_the_study_time():
    study, _ = profiled_study(n=10)
    frame = trials_frame(study)
    spent, trials, share = wall_share(profile_record(), frame)
    assert spent == PROFILE_SECONDS and trials == pytest.approx(frame["seconds.total"].sum())
    assert share == pytest.approx(PROFILE_SECONDS / (PROFILE_SECONDS + trials))
    assert wall_share({}, frame.iloc[0:0]) == (0.0, 0.0, 0.0)


def test_promoted_points_are_marked_in_plots_and_tables():
    study, numbers = profiled_study()
    frame = trials_frame(study)
    promoted = numbers["promoted"]
    data = pareto_data(frame)
    assert data.promoted is not None and data.promoted.trial == [promoted]
    assert f"promoted from #{numbers[0]}" in data.promoted.text[0]
    seeded_text = data.groups["front"].text + data.groups["dominated"].text
    assert any("seeded by the profile (latency budget <= 0.80x the teacher)" in t for t in seeded_text)
    table = pareto_frame(frame).set_index("trial")
    assert table.loc[promoted, "promoted from"] == f"#{numbers[0]}" and table.loc[numbers[1], "promoted from"] == ""
    assert table.loc[numbers[1], "seeded"] == "size budget"  # seed 1 is on the front, beside the int8 baseline
    assert list(table.columns)[-3:] == ["seeded", "promoted from", "settings"]
    assert any(row.startswith(f"#{promoted} from #{numbers[0]} ") for row in policy_data(frame).rows)
    plain = pareto_frame(trials_frame(build_study(n=10)))
    assert "promoted from" not in plain and "seeded" not in plain  # only where some front point has one


def test_the_page_shows_the_profile_dropped_values_and_predictions(tmp_path):
    study, numbers = profiled_study()
    page = write_report(study, tmp_path)["html"].read_text(encoding="utf-8")
    assert figures_in(page) == [*FIGURES, "sensitivity", "proxy"]
    section = page[page.index("<h2>Per-layer profile</h2>"):page.index("<h2>Failed and stopped")]
    assert "6 values on 3 layers, damage on 256 calibration samples" in section
    frame = trials_frame(study)
    share = PROFILE_SECONDS / (PROFILE_SECONDS + frame["seconds.total"].sum())
    assert re.search(rf"The profile took 12.5 s: {share:.1%} of the study's [\d.]+ s", section)
    dropped = section[section.index("Values dropped from the space (2)"):]
    for d in DROPPED:
        assert d["param"] in dropped and f"<td>{d['value']:g}</td>" in dropped and d["why"] in dropped.replace(
            "&#x27;", "'").replace("&lt;", "<")
    assert "Values the profile could not measure (1)" in section and "RuntimeError: no kernel" in section
    seeded = section[section.index("Seeded plans: predicted vs measured"):]
    assert "<th>predicted KL</th>" in seeded and "<th>measured drop</th>" in seeded
    assert "<td>&lt;= 29.3 KB</td>" in seeded and f"#{numbers['promoted']} (drop -1.50)" in seeded
    assert "rank correlation of predicted damage" in seeded
    pareto = page[page.index("data-figure='pareto-2d'"):page.index("data-figure='pareto-3d'")]
    assert "promoted (plan re-run, longer fine-tune)" in pareto
    assert json.dumps(f"promoted from #{numbers[0]}")[1:-1] in pareto


def test_a_study_without_a_profile_says_so_in_one_line(tmp_path):
    page = write_report(build_study(n=10), tmp_path)["html"].read_text(encoding="utf-8")
    assert figures_in(page) == FIGURES
    section = page[page.index("<h2>Per-layer profile</h2>"):page.index("<h2>Failed and stopped")]
    assert section.count("<p") == 1 and NO_PROFILE.split("(")[0] in section


def test_a_profile_without_seeded_trials_says_so(tmp_path):
    study, _ = profiled_study(seeds=False)
    page = write_report(study, tmp_path)["html"].read_text(encoding="utf-8")
    assert figures_in(page) == [*FIGURES, "sensitivity"] and NO_SEEDS.split("(")[0] in page


@pytest.mark.slow
def test_the_profile_figures_draw_in_a_browser(tmp_path):
    from test_report_browser import PROBE, figure_sections, render

    study, _ = profiled_study()
    html_path = write_report(study, tmp_path / "report")["html"]
    probe = html_path.with_name("probe.html")
    probe.write_text(html_path.read_text(encoding="utf-8").replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    dom, log = render(probe, tmp_path / "chromium")
    errors = re.search(r'<pre id="probe-errors">(.*?)</pre>', dom, re.S)
    assert errors is None, errors.group(1)
    assert not [line for line in log.splitlines() if "CONSOLE" in line and "Uncaught" in line]
    sections = figure_sections(dom)
    assert list(sections) == [*FIGURES, "sensitivity", "proxy"]
    for name in ("sensitivity", "proxy", "pareto-2d"):
        assert re.search(r'<svg[^>]*class="main-svg"', sections[name]), f"{name}: nothing drawn"
    assert "heatmaplayer" in sections["sensitivity"] or 'class="hm"' in sections["sensitivity"]
    assert sections["proxy"].count('class="point"') >= 9  # three finished seeds in each of three panels
