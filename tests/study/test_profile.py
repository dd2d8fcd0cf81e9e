"""The per-layer profile: measured on whole artifacts, deterministic, stored once per study, shaping the space."""

from __future__ import annotations

import optuna
import pytest
import torch

from autocomp.data import DataBundle
from autocomp.pipeline.workbench import Workbench
from autocomp.study import records
from autocomp.study.profile import (
    MAX_VALUES,
    candidates,
    catastrophic_agreement,
    dropped_values,
    measure_plans,
    measure_profile,
    profiled_values,
    shaped_space,
)
from autocomp.study.space import Domain, parse_space

SPACE = """
version: 1
layers:
  - type: Conv2d
    bits: [null, 8, 2]
    channel_ratio: [0.0, 0.5]
  - type: Linear
    sparsity: {low: 0.0, high: 0.95, step: 0.05}
    rank: [1.0, 0.25]
"""


def _data() -> DataBundle:
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (320,), generator=gen)
    x = torch.randn(320, 1, 8, 8, generator=gen) * 0.3
    x[torch.arange(len(y)), 0, y % 8, y // 8 * 4] += 2.0
    return DataBundle(x[:256], y[:256], x[256:], y[256:], 10, [0.0], [1.0])


@pytest.fixture(scope="module")
def bench() -> Workbench:
    from tiny_models import tiny_cnn

    torch.manual_seed(0)
    return Workbench(tiny_cnn().eval(), _data())


@pytest.fixture(scope="module")
def record(bench: Workbench) -> dict:
    return measure_profile(bench, parse_space(SPACE))


def test_a_stepped_range_is_profiled_at_a_few_values_ends_included() -> None:
    values = profiled_values(Domain(low=0.0, high=0.95, step=0.05), "sparsity")
    assert len(values) == MAX_VALUES and values[0] == 0.05 and values[-1] == 0.95
    assert profiled_values(Domain(choices=(None, 8, 4, 2)), "bits") == (8, 4, 2)  # choices whole, no-op left out
    assert profiled_values(Domain(low=0.0, high=0.5), "sparsity") == ()  # continuous: left to the search


def test_every_offered_value_of_every_layer_has_an_entry_measured_on_its_artifact(bench, record) -> None:
    todo = candidates(parse_space(SPACE), bench.teacher, bench.outputs)
    measured = {(e["layer"], e["knob"], e["value"]) for e in record["entries"]}
    assert measured == {(layer, knob, v) for (layer, knob), values in todo.items() for v in values}
    assert record["failed"] == [] and record["teacher_bytes"] == bench.teacher_path.stat().st_size
    by = {(e["layer"], e["knob"], e["value"]): e for e in record["entries"]}
    # The damage grows with the change, and the bytes are the artifact's own (sparser: smaller file).
    assert by[("0", "bits", 2)]["kl"] > by[("0", "bits", 8)]["kl"] >= 0
    assert by[("7", "sparsity", 0.95)]["bytes"] < by[("7", "sparsity", 0.05)]["bytes"]
    assert by[("7", "sparsity", 0.95)]["kl"] > by[("7", "sparsity", 0.05)]["kl"]
    for e in record["entries"]:
        low, median, high = e["latency"][1], e["latency"][0], e["latency"][2]
        assert 0 < low <= median <= high and 0 <= e["agreement"] <= 100


def test_the_profile_is_deterministic_for_a_seed_but_for_its_timings(bench, record) -> None:
    again = measure_profile(bench, parse_space(SPACE))

    def fixed(rec: dict) -> list:
        return [{k: v for k, v in e.items() if k != "latency"} for e in rec["entries"]]

    assert fixed(again) == fixed(record)


def test_shaping_drops_what_wrecks_the_model_or_cannot_pay_and_keeps_the_no_op(bench) -> None:
    space = parse_space(SPACE)
    entries = [
        {"layer": "0", "knob": "bits", "param": "0.bits", "value": 8, "kl": 0.0, "agreement": 100.0,
         "bytes": 50, "latency": [1.3, 1.2, 1.4]},  # bigger and slower: dropped
        {"layer": "0", "knob": "bits", "param": "0.bits", "value": 2, "kl": 0.1, "agreement": 90.0,
         "bytes": -100, "latency": [1.3, 1.2, 1.4]},  # smaller though slower: kept
        {"layer": "7", "knob": "sparsity", "param": "7.sparsity", "value": 0.5, "kl": 0.1, "agreement": 95.0,
         "bytes": -900, "latency": [1.0, 0.97, 1.03]},
        {"layer": "7", "knob": "sparsity", "param": "7.sparsity", "value": 0.75, "kl": 3.0, "agreement": 12.0,
         "bytes": -1500, "latency": [1.0, 0.97, 1.03]},  # wrecks it alone: the range ends below it
    ]
    record = {"entries": entries, "num_classes": 10}
    assert catastrophic_agreement(10) == 20.0
    assert [(d["param"], d["value"]) for d in dropped_values(record)] == [("0.bits", 8), ("7.sparsity", 0.75)]
    shaped = {p.name: p.spec for p in shaped_space(space, bench.teacher, bench.outputs, record).params(
        bench.teacher, bench.outputs)}
    assert shaped["0.bits"].choices == (None, 2)
    assert shaped["7.sparsity"].low == 0.0 and shaped["7.sparsity"].high == pytest.approx(0.7)
    assert shaped["3.bits"].choices == (None, 8, 2)  # not in the record: as written


@pytest.mark.slow
def test_a_study_measures_its_profile_once_and_a_resume_or_second_worker_reads_it_back(tmp_path, monkeypatch) -> None:
    from tiny_models import tiny_cnn

    import autocomp
    from autocomp.config import SearchConfig
    from autocomp.study import profile as profile_module
    from autocomp.study.objective import Objective

    calls = []
    real = profile_module.measure_profile
    monkeypatch.setattr(profile_module, "measure_profile", lambda *a, **k: calls.append(1) or real(*a, **k))
    data = _data()
    url = f"sqlite:///{tmp_path / 's.db'}"
    kw = dict(storage=url, study_name="p", run_dir=str(tmp_path), space="default", baselines=["teacher"],
              seeds=2, promote=0.0)
    torch.manual_seed(0)
    model = tiny_cnn().eval()
    study = autocomp.search(model, (data.train_x, data.train_y), (data.val_x, data.val_y), n_trials=3, **kw)
    rec = records.read_study(study)
    assert len(calls) == 1 and rec.profile is not None and rec.seeds_queued
    seeded = [t for t in study.trials if t.user_attrs.get(records.SEEDED)]
    # The teacher's baseline and as many seeds as the run has room for, all run.
    assert len(study.trials) == 3 and 1 <= len(seeded) <= 2
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in seeded)
    # Each seed was checked on its untrained artifact first: the same graph, so nearly the same file.
    assert rec.profile["seed_check"]["candidates"] >= len(seeded)
    for t in seeded:
        untrained = t.user_attrs[records.SEEDED]["untrained"]
        assert abs(untrained["size_bytes"] - t.user_attrs["metrics"]["size_bytes"]) <= 0.2 * untrained["size_bytes"]
    # A resumed run: the profile is read back, the seeds are not enqueued again.
    study = autocomp.search(model, (data.train_x, data.train_y), (data.val_x, data.val_y), n_trials=1,
                            overwrite=True, **kw)
    assert len(calls) == 1
    assert len([t for t in study.trials if t.user_attrs.get(records.SEEDED)]) == len(seeded)
    # A second worker on the same study: the same shaped space, from the stored record.
    bench = Workbench(model, data)
    config = SearchConfig(storage=url, study_name="p", seeds=2, promote=0.0)
    joiner = Objective(bench, parse_space("version: 1\nlayers:\n  - type: Linear\n    rank: [1.0, 0.5]\n"),
                       config, None, creator=False)
    joiner.prepare(study)
    assert len(calls) == 1


def test_whole_plans_are_measured_on_their_untrained_artifacts(bench) -> None:
    from autocomp.plan import LayerPlan, Plan

    teacher_bytes = bench.teacher_path.stat().st_size
    plans = [Plan(), Plan(layers={"7": LayerPlan(bits=4), "9": LayerPlan(bits=4)}),
             Plan(layers={"no_such_layer": LayerPlan(bits=8)})]
    same, int4, broken = measure_plans(bench, plans)
    assert same["kl"] < 1e-6 and same["agreement"] == 100.0 and same["size_bytes"] == teacher_bytes
    assert 0.6 <= same["latency_ratio"][0] <= 1.6  # the teacher's own graph beside it
    assert int4["size_bytes"] < 0.75 * teacher_bytes and int4["kl"] > same["kl"]  # 2 of its 4 layers
    assert broken is None  # a plan that cannot be built is no candidate


def test_values_a_baseline_stands_on_are_never_dropped(bench) -> None:
    space = parse_space(SPACE)
    entries = [{"layer": "0", "knob": "bits", "param": "0.bits", "value": 8, "kl": 0.0, "agreement": 100.0,
                "bytes": 50, "latency": [1.3, 1.2, 1.4]},  # bigger and slower, but int8 runs it
               {"layer": "7", "knob": "sparsity", "param": "7.sparsity", "value": 0.45, "kl": 3.0, "agreement": 12.0,
                "bytes": -1500, "latency": [1.0, 0.97, 1.03]}]
    record = {"entries": entries, "num_classes": 10}
    kept = {"0.bits": {8}, "7.sparsity": {0.5}}
    assert [(d["param"], d["value"]) for d in dropped_values(record, kept)] == [("7.sparsity", 0.45)]
    shaped = {p.name: p.spec for p in shaped_space(space, bench.teacher, bench.outputs, record, kept).params(
        bench.teacher, bench.outputs)}
    assert shaped["0.bits"].choices == (None, 8, 2)
    assert shaped["7.sparsity"].high == pytest.approx(0.5)  # prune50's 0.5 stays in the range


def test_a_plan_timed_with_a_wide_spread_is_timed_again_longer_and_the_tighter_kept(bench, monkeypatch) -> None:
    from autocomp.measure import TeacherPace
    from autocomp.plan import Plan
    from autocomp.study import profile

    calls, spreads = [], []
    real = profile.paired_rounds

    def noisy_first(sessions, shape, batch, min_runs, min_seconds):  # noqa: ANN001, ANN202
        calls.append(min_seconds)
        rounds = real(sessions, shape, batch, min_runs=min_runs, min_seconds=min_seconds)
        if len(calls) == 1:  # a burst from another job: every other round 3x slower
            rounds.per_round[::2, 0] *= 3.0
        ratio = rounds.ratio(0, 1, bench.measure.min_spread)
        spreads.append(ratio.high / ratio.low)
        return rounds

    monkeypatch.setattr(profile, "paired_rounds", noisy_first)
    # Never timed again for a slower host here (tests/measure/test_latency.py tests that apart): an
    # infinite floor held for the first timing only, and the 4x timing on a busy host was retimed.
    monkeypatch.setattr(bench, "pace", TeacherPace(spell=float("inf")))
    (timed,) = measure_plans(bench, [Plan()])
    assert calls == [bench.measure.min_seconds, 4 * bench.measure.min_seconds]
    median, low, high = timed["latency_ratio"]
    # The second timing of the teacher's own graph is kept: tighter than the burst's (about 3x).
    assert spreads[0] > 1.25 and spreads[1] < spreads[0] and high / low == pytest.approx(spreads[1], rel=0.01)
    assert 0.6 <= median <= 1.6


def test_a_deadline_profiles_the_largest_layers_by_bytes_and_by_compute_first() -> None:
    from torch import nn

    from autocomp.study.profile import profile_order

    # "2": most weights (1,156); "0": most multiply-accumulates (73,728 per sample); "4": neither.
    model = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 4, 3, stride=4, padding=1),
                          nn.Flatten(), nn.Linear(64, 10))
    todo = [("0", "bits"), ("0", "rank"), ("2", "bits"), ("4", "bits")]
    order = profile_order(model, torch.zeros(1, 1, 16, 16), todo)
    assert order == [("2", "bits"), ("0", "bits"), ("0", "rank"), ("4", "bits")]  # by bytes alone: 2, 4, 0


def test_no_layer_is_profiled_after_the_deadline_and_the_rest_stay_as_written(bench, record, monkeypatch) -> None:
    from types import SimpleNamespace

    from autocomp.study import profile
    from autocomp.study.profile import profile_order

    clock = iter(range(1, 1000))  # one tick per reading: the start, then one before each layer's knob
    monkeypatch.setattr(profile, "time", SimpleNamespace(monotonic=lambda: next(clock)))
    space = parse_space(SPACE)
    cut = measure_profile(bench, space, deadline=3.5)
    todo = candidates(space, bench.teacher, bench.outputs)
    order = profile_order(bench.teacher, bench.example, list(todo))
    assert {(e["layer"], e["knob"]) for e in cut["entries"]} == set(order[:2])
    assert cut["unprofiled"] == [{"layer": layer, "knob": knob, "values": len(todo[(layer, knob)])}
                                 for layer, knob in order[2:]]
    # The same numbers as the whole profile's, in the model's order; nothing about the rest.
    whole = [{k: v for k, v in e.items() if k != "latency"} for e in record["entries"]
             if (e["layer"], e["knob"]) in set(order[:2])]
    assert [{k: v for k, v in e.items() if k != "latency"} for e in cut["entries"]] == whole
    assert set(cut["layer_bytes"]) == {layer for layer, _ in order[:2]}


def test_no_plan_is_measured_after_the_deadline(bench) -> None:
    import time

    from autocomp.plan import Plan

    assert measure_plans(bench, [Plan(), Plan()], deadline=time.monotonic()) == []


def test_seeds_are_the_profiles_predictions_when_the_deadline_passed_before_the_check(bench, record) -> None:
    from autocomp.config import SearchConfig
    from autocomp.study.objective import Objective

    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    records.write_profile(study, record | {"dropped": []})
    study.set_user_attr("teacher_reference_ms", 0.1234)  # stored: no timing of its own
    objective = Objective(bench, parse_space(SPACE), SearchConfig(seeds=4, n_trials=10, promote=0.0,
                                                                  baselines=("teacher",)), None, creator=True)
    objective.prepare(study, deadline=0.0)
    check = records.read_study(study).profile["seed_check"]
    assert check["predicted_only"] and check["candidates"] == 0 and check["unchecked"] == 0
    seeded = [t.user_attrs[records.SEEDED] for t in study.get_trials(deepcopy=False)]
    assert 1 <= len(seeded) <= 4 and all(s.get("untrained") is None and s["predicted"] for s in seeded)


def test_seed_candidates_the_deadline_left_unmeasured_are_counted_and_never_seeded(bench, record, monkeypatch) -> None:
    from autocomp.config import SearchConfig
    from autocomp.study import profile
    from autocomp.study.objective import Objective

    real, asked = profile.measure_plans, []

    def first_two(bench, plans, progress=None, deadline=None):  # noqa: ANN001, ANN202 - the deadline came after two
        asked.append(len(plans))
        return real(bench, plans[:2], progress)

    monkeypatch.setattr(profile, "measure_plans", first_two)
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    records.write_profile(study, record | {"dropped": []})
    study.set_user_attr("teacher_reference_ms", 0.1234)
    objective = Objective(bench, parse_space(SPACE), SearchConfig(seeds=4, n_trials=10, promote=0.0,
                                                                  baselines=("teacher",)), None, creator=True)
    objective.prepare(study, deadline=float("inf"))
    check = records.read_study(study).profile["seed_check"]
    measured = sum(min(n, 2) for n in asked)
    assert not check["predicted_only"] and check["candidates"] == measured
    assert check["unchecked"] == sum(asked) - measured > 0
    seeded = [t.user_attrs[records.SEEDED] for t in study.get_trials(deepcopy=False)]
    assert seeded and all(s["untrained"] is not None for s in seeded)  # measured ones only
