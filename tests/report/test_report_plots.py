"""The data step of the plots, checked without drawing."""

from __future__ import annotations

import pytest
from report_synthetic import LAYERS

from autocomp.report.frame import trials_frame
from autocomp.report.plots import hover_text, layer_settings_text, pareto_data, policy_data


def test_pareto_data_partitions_finished_trials(make_study):
    study = make_study(n=30)
    frame = trials_frame(study)
    data = pareto_data(frame, recommended=None)
    groups = data.groups
    finished = {t.number for t in study.trials if t.state.name == "COMPLETE"}
    seen = [n for g in groups.values() for n in g.trial]
    assert sorted(seen) == sorted(finished)  # every finished trial exactly once, failed ones never
    assert set(groups["baselines"].trial) == {0, 1, 2}
    assert groups["baselines"].label == ["teacher", "int8", "prune50"]
    best = {t.number for t in study.best_trials}
    assert set(groups["front"].trial) == best - {0, 1, 2}
    assert not set(groups["dominated"].trial) & best
    assert data.recommended is None
    i = groups["baselines"].trial.index(1)
    assert groups["baselines"].size_kb[i] == pytest.approx(26_000 / 1024)
    assert groups["baselines"].latency_ms[i] == 0.03


def test_pareto_data_projections_and_recommended_point(make_study):
    frame = trials_frame(make_study(n=30))
    target = int(frame.loc[frame["pareto"] & (frame["baseline"] == ""), "trial"].iloc[0])
    data = pareto_data(frame, recommended=target)
    row = frame[frame["trial"] == target].iloc[0]
    assert data.recommended.trial == [target]
    assert data.recommended.accuracy == [row["accuracy"]]
    size_steps = data.steps["size_kb"]
    # the most accurate trial and the smallest trial are both on the size staircase
    done = frame[frame["state"] == "COMPLETE"]
    assert int(done.loc[done["size_bytes"].idxmin(), "trial"]) in size_steps.trial
    assert int(done.loc[done["accuracy"].idxmax(), "trial"]) in size_steps.trial
    assert pareto_data(frame, recommended=10_000).recommended is None  # unknown trial: no marker


def test_hover_text_names_trial_and_settings(make_study):
    frame = trials_frame(make_study(n=5))
    row = frame[frame["trial"] == 3].iloc[0].to_dict()
    text = hover_text(row)
    assert text.startswith("trial 3<br>")
    assert f"{row['accuracy']:.2f}%" in text
    assert "quantized" in text or "sparse" in text
    assert "features.0:" in text  # per-layer settings
    int8 = hover_text(frame[frame["trial"] == 1].iloc[0].to_dict())
    assert "trial 1 (int8)" in int8 and "classifier: 8b" in int8 and "0.260x" in int8
    assert layer_settings_text({"a.bits": None, "a.sparsity": 0.0, "a.channel_ratio": 0.0, "a.rank": 1.0}) == ""


def test_policy_data_rows_are_pareto_points_with_defaults_filled(make_study):
    study = make_study(n=30)
    frame = trials_frame(study)
    policy = policy_data(frame)
    assert policy.layers == LAYERS
    assert set(policy.trials) == {t.number for t in study.best_trials}
    assert set(policy.knobs) == {"bits", "sparsity", "channel_ratio", "rank"}
    row = policy.trials.index(0)  # the teacher: its Plan touches nothing
    assert policy.knobs["bits"][row] == [32.0] * len(LAYERS)
    assert policy.knobs["rank"][row] == [1.0] * len(LAYERS)
    assert policy.knobs["channel_ratio"][row] == [0.0] * len(LAYERS)
    int8 = policy.trials.index(1)
    assert policy.knobs["bits"][int8] == [8.0] * len(LAYERS)
    for i, number in enumerate(policy.trials):
        plan = study.trials[number].user_attrs["plan"]["layers"]
        for j, layer in enumerate(LAYERS):
            if layer in plan:
                assert policy.knobs["sparsity"][i][j] == plan[layer]["sparsity"]
    accs = [frame.set_index("trial").loc[n, "accuracy"] for n in policy.trials]
    assert accs == sorted(accs, reverse=True)


def test_policy_data_leaves_out_knobs_nobody_changed(make_study):
    frame = trials_frame(make_study(n=20))
    frame[[c for c in frame.columns if c.endswith(".channel_ratio")]] = 0.0
    assert "channel_ratio" not in policy_data(frame).knobs
    assert policy_data(frame.iloc[0:0]).rows == []
