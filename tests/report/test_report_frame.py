"""The trials frame and its files: the numbers in trials.csv / trials.parquet are the storage's."""

from __future__ import annotations

import optuna
import pandas as pd
import pytest
from report_synthetic import LAYERS, TEACHER

from autocomp.report import write_report
from autocomp.report.frame import layer_order, pareto_frame, plan_summary, teacher_point, trials_frame


def _check_against_storage(table: pd.DataFrame, study: optuna.Study) -> None:
    """Every trial's objectives, state, duration, reason and per-layer settings equal the storage's."""
    trials = study.trials
    assert list(table["trial"]) == [t.number for t in trials]
    for t, (_, row) in zip(trials, table.iterrows(), strict=True):
        assert row["state"] == t.state.name
        if t.values:
            assert row["accuracy"] == t.values[0]
            assert row["size_bytes"] == t.values[1]
            assert row["latency_ms"] == t.values[2]
        else:
            assert pd.isna(row["accuracy"]) and pd.isna(row["size_bytes"]) and pd.isna(row["latency_ms"])
        assert row["duration_s"] == pytest.approx(t.duration.total_seconds(), abs=1e-9)
        reason = t.user_attrs.get("fail_reason", "")
        assert (row["fail_reason"] if pd.notna(row["fail_reason"]) else "") == reason
        assert (row["baseline"] if pd.notna(row["baseline"]) else "") == t.user_attrs.get("baseline", "")
        for layer, settings in t.user_attrs["plan"]["layers"].items():
            for knob, value in settings.items():
                got = row[f"{layer}.{knob}"]
                assert (pd.isna(got) if value is None else got == value), (t.number, layer, knob, got, value)
        for name, value in t.params.items():  # Optuna's own parameter names are columns too
            got = row[name]
            assert (pd.isna(got) if value is None else got == pytest.approx(value, rel=1e-12)), (name, got, value)


def test_csv_and_parquet_read_back_to_the_storage_numbers(make_study, tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    make_study(n=12, storage=storage, name="roundtrip")
    study = optuna.load_study(study_name="roundtrip", storage=storage)  # read back, as `autocomp report` does
    paths = write_report(study, tmp_path / "out", storage=storage)
    csv = pd.read_csv(paths["csv"], float_precision="round_trip", keep_default_na=False, na_values=[""])
    parquet = pd.read_parquet(paths["parquet"])
    assert len(csv) == len(parquet) == 15
    assert {"FAIL", "PRUNED", "COMPLETE"} <= set(csv["state"])
    _check_against_storage(csv, study)
    _check_against_storage(parquet, study)


def test_frame_columns_types_and_order(make_study):
    frame = trials_frame(make_study(n=10))
    assert str(frame["size_bytes"].dtype) == "Int64"  # integers, empty for failed trials
    assert str(frame["features.0.bits"].dtype) == "Int64"
    settings = [c for c in frame.columns if c.endswith(".bits")]
    assert settings == [f"{x}.bits" for x in LAYERS]  # model order, not alphabetical
    assert frame.loc[frame["baseline"] == "teacher", "size_ratio"].item() == 1.0
    int8 = frame[frame["baseline"] == "int8"].iloc[0]
    assert int8["size_ratio"] == pytest.approx(0.26)
    assert int8["latency_ratio"] == pytest.approx(0.6)
    assert int8["drop"] == pytest.approx(0.1)
    assert frame["seconds.total"].notna().sum() == (frame["state"] == "COMPLETE").sum() - 3


def test_pareto_column_matches_optuna_best_trials_with_constraints(make_study):
    study = make_study(n=40, seed=3)
    # Mark some good-looking trials infeasible: Optuna then leaves them off best_trials.
    front = [t for t in study.best_trials if not t.user_attrs.get("baseline")][:4]
    for t in front:  # each would dominate a front point, were it feasible
        study.add_trial(optuna.trial.create_trial(values=[t.values[0] + 0.01, t.values[1] - 1, t.values[2]],
                                                  constraints={"accuracy_drop": 1.0}))
    study.add_trial(optuna.trial.create_trial(values=[99.0, 1e6, 1.0], constraints={"accuracy_drop": -1.0}))
    frame = trials_frame(study)
    best = {t.number for t in study.best_trials}
    assert set(frame.loc[frame["pareto"], "trial"]) == best
    assert (~frame["feasible"]).sum() == 4 and not frame.loc[~frame["feasible"], "pareto"].any()
    assert {t.number for t in front} <= best and len(study.trials) - 1 in best


def test_pareto_frame_is_sorted_and_has_teacher_ratios(make_study):
    study = make_study(n=30)
    table = pareto_frame(study)
    assert list(table["accuracy %"]) == sorted(table["accuracy %"], reverse=True)
    assert set(table["trial"]) == {t.number for t in study.best_trials}
    teacher = table[table["trial"] == 0].iloc[0]
    assert teacher["size x"] == 1.0 and teacher["latency x"] == 1.0 and teacher["drop"] == 0.0
    assert teacher["settings"] == "baseline: teacher"


def test_empty_study_gives_empty_tables(tmp_path):
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    frame = trials_frame(study)
    assert frame.empty and {"trial", "state", "accuracy"} <= set(frame.columns)
    assert pareto_frame(frame).empty
    paths = write_report(study, tmp_path)
    assert "No finished trials" in paths["html"].read_text()


def test_layer_order_keeps_model_order_and_sorts_extras_naturally(make_study):
    study = make_study(n=2)
    assert layer_order(study.trials) == LAYERS
    only_plans = [t for t in study.trials if not t.params]  # baselines: order from their Plans
    assert layer_order(only_plans) == ["classifier", "features.0", "features.3", "features.10"]


def test_plan_summary_counts_layers_and_reads_baselines(make_study):
    frame = trials_frame(make_study(n=1))
    assert plan_summary(frame.iloc[1]) == "baseline: int8"
    row = {"trial": 9, "baseline": "", "a.bits": 4, "b.bits": None, "a.sparsity": 0.5, "b.sparsity": 0.0,
           "a.rank": 1.0, "b.rank": 0.5, "distill.temperature": 3.0}
    assert plan_summary(row) == "1 rank kept 0.50, 1 sparse 0.50, 1/2 quantized ~4.0b, T=3.0"


def test_teacher_point_falls_back_to_the_teacher_trial(make_study):
    with_attrs = make_study(n=3)
    assert teacher_point(with_attrs, trials_frame(with_attrs)) == {k: float(v) for k, v in TEACHER.items()}
    no_attrs = make_study(n=3, teacher_attrs=False)
    assert teacher_point(no_attrs, trials_frame(no_attrs)) == {k: float(v) for k, v in TEACHER.items()}
    bare = make_study(n=3, teacher_attrs=False, baselines=False)
    assert teacher_point(bare, trials_frame(bare)) is None  # no accuracy or size known
