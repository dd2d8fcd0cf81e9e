"""The latency objective: interleaved ratio x one teacher reference per study, the same numbers everywhere."""

from __future__ import annotations

import optuna
import pytest
import torch

import autocomp
from autocomp.report.frame import pareto_frame, teacher_point, trials_frame
from autocomp.report.html import render_page
from autocomp.report.recommend import recommend
from autocomp.study.records import set_system_attr, study_attr


# A whole search (8 s on 2 cores): the tests that read it are e2e, run with --all.
@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from tiny_models import tiny_cnn

    from autocomp.data import DataBundle

    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (384,), generator=gen)
    x = torch.randn(384, 1, 8, 8, generator=gen) * 0.3
    x[torch.arange(len(y)), 0, y % 8, y // 8 * 4] += 2.0
    data = DataBundle(x[:256], y[:256], x[256:], y[256:], 10, [0.0], [1.0])
    tmp = tmp_path_factory.mktemp("latency")
    space = tmp / "space.yaml"  # every knob on every layer, as the default space; a short fine-tune
    space.write_text("version: 1\nlayers:\n  - type: Conv2d\n    sparsity: [0.0, 0.5]\n    channel_ratio: [0.0, 0.5]\n"
                     "    bits: [null, 8]\n    rank: [1.0, 0.5]\n  - type: Linear\n    bits: [null, 8, 4]\n"
                     "    rank: [1.0, 0.5]\nglobal:\n  steps: 20\n")
    torch.manual_seed(0)
    return autocomp.search(tiny_cnn().eval(), (data.train_x, data.train_y), (data.val_x, data.val_y),
                           space=str(space), n_trials=6, storage=f"sqlite:///{tmp / 's.db'}", study_name="lat",
                           run_dir=str(tmp))


@pytest.mark.e2e
def test_the_reference_and_layer_timings_are_stored_once_on_the_study(study: optuna.Study) -> None:
    attrs = {key: study_attr(study, key) for key in ("teacher_reference_ms", "teacher_reference", "profile")}
    reference = attrs["teacher_reference_ms"]
    assert reference > 0 and attrs["teacher_reference"]["median_ms"] == reference
    assert attrs["teacher_reference"]["runs"] >= 200
    assert attrs["profile"]["entries"]  # every layer's values, timed beside the teacher once per study
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert {t.user_attrs["teacher_reference_ms"] for t in done} == {reference}


@pytest.mark.e2e
def test_every_latency_value_is_the_used_ratio_times_the_reference(study: optuna.Study) -> None:
    reference = study.user_attrs["teacher_reference_ms"]
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) >= 4
    for t in done:
        m, used = t.user_attrs["metrics"], t.user_attrs["latency_ratio"]
        assert t.values[2] == used * reference
        assert m["latency_ratio_low"] <= m["latency_ratio"] <= m["latency_ratio_high"]
        assert m["latency_ms"] > 0 and m["teacher_latency_ms"] > 0  # both medians of the trial's own timing
        assert 1 <= m["latency_timings"] <= 3  # timed again while the host ran slower (TeacherPace)
        if t.user_attrs.get("baseline") == "teacher":
            assert used == 1.0 and t.values[2] == reference  # the teacher's own file
        elif m["latency_ratio_low"] <= 1.0 <= m["latency_ratio_high"]:
            assert used == 1.0  # inside the spread: not faster, not slower
        else:
            assert used == m["latency_ratio"]


@pytest.mark.e2e
def test_front_tables_header_and_recommendation_use_the_same_numbers(study: optuna.Study) -> None:
    frame = trials_frame(study)
    reference = study.user_attrs["teacher_reference_ms"]
    assert teacher_point(study, frame)["latency_ms"] == reference
    for _, row in frame[frame["state"] == "COMPLETE"].iterrows():
        assert row["latency_ms"] == row["latency_ratio"] * reference
        if row["pareto"] and row["latency_ratio"] < 1.0:  # called faster: the whole spread is below 1
            assert row["latency_ratio_high"] < 1.0
    table = pareto_frame(frame)
    assert {"latency x", "measured x (spread)"} <= set(table.columns)
    page = render_page(study, frame)
    assert f"{reference:.4f} ms" in page and "reference time" in page
    rec = recommend(frame, study.user_attrs["teacher_accuracy"], max_drop=100.0)
    chosen = frame[frame["trial"] == rec.trial].iloc[0]
    assert f"{chosen['latency_ms']:.4f} ms" in rec.reason


def test_a_joining_worker_waits_for_the_creators_numbers(tiny_data, tmp_path) -> None:
    """Workers started together must search one space and multiply by one reference."""
    import threading

    from tiny_models import tiny_cnn

    from autocomp.config import SearchConfig
    from autocomp.pipeline.workbench import Workbench
    from autocomp.study.objective import Objective
    from autocomp.study.space import load_space

    torch.manual_seed(0)
    bench = Workbench(tiny_cnn().eval(), tiny_data)
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    record = {"0.rank": {"0.75": [1.2, 1.1, 1.3], "0.5": [1.2, 1.1, 1.3], "0.25": [1.2, 1.1, 1.3]}}

    def creator() -> None:  # what the creating process stores after its timing
        set_system_attr(study, "layer_costs", record)
        study.set_user_attr("teacher_reference_ms", 0.1234)

    timer = threading.Timer(1.0, creator)
    timer.start()
    objective = Objective(bench, load_space("default"), SearchConfig(), None, creator=False)
    try:
        assert objective.prepare(study) == 0.1234  # its numbers, not a timing of its own
    finally:
        timer.cancel()
    assert study_attr(study, "layer_costs") == record and study_attr(study, "teacher_reference") is None
    params = {p.name: p.spec for p in objective.space.params(bench.teacher, bench.outputs)}
    assert params["0.rank"].fixed == 1.0  # decided from the creator's record: no rank of layer 0 pays
