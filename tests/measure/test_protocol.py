"""measure_artifact: the teacher timed beside the artifact gives a ratio with its spread."""

from __future__ import annotations

import pytest
import torch

from autocomp.artifact import export, open_session
from autocomp.measure import MeasureConfig, Metrics, measure_artifact
from autocomp.pipeline.compress import apply
from autocomp.plan import Plan


@pytest.fixture
def artifacts(tiny_data, tmp_path):
    from tiny_models import tiny_cnn

    torch.manual_seed(0)
    model = tiny_cnn().eval()
    x = tiny_data.val_x
    export(apply(model, Plan(), x[:1]), x[:1], [x[:32].numpy()], tmp_path / "t.acz")
    return tmp_path / "t.acz", x.numpy(), tiny_data.val_y.numpy()


def test_a_teacher_beside_gives_a_ratio_its_spread_and_both_times(artifacts) -> None:
    path, x, y = artifacts
    config = MeasureConfig(min_runs=40, min_seconds=0.0)
    m = measure_artifact(path, (x, y), config, teacher_session=open_session(path))
    assert m.latency_rounds >= 40
    assert m.latency_ratio_low <= m.latency_ratio <= m.latency_ratio_high
    # The spread is at least +-min_spread around the median.
    assert m.latency_ratio_low <= m.latency_ratio * (1 - config.min_spread) + 1e-12
    assert m.latency_ratio_high >= m.latency_ratio * (1 + config.min_spread) - 1e-12
    assert m.latency_ms > 0 and m.teacher_latency_ms > 0
    assert m.ratio.median == m.latency_ratio and m.ratio.rounds == m.latency_rounds


def test_a_pace_whose_floor_the_teacher_cannot_reach_times_the_pair_again(artifacts) -> None:
    """The teacher beside the artifact ran far slower than the pace's floor: the pair is timed
    1 + RETIMES times and the count is stored; an unchecked pace times it once and sets its floor."""
    from autocomp.measure.latency import RETIMES, TeacherPace

    path, x, y = artifacts
    config = MeasureConfig(min_runs=10, min_seconds=0.0)
    fresh = TeacherPace()
    m = measure_artifact(path, (x, y), config, teacher_session=open_session(path), pace=fresh)
    assert m.latency_timings == 1 and fresh.floor_ms == pytest.approx(m.teacher_latency_ms)
    pace = TeacherPace(floor_ms=1e-6)
    m = measure_artifact(path, (x, y), config, teacher_session=open_session(path), pace=pace)
    assert m.latency_timings == 1 + RETIMES and Metrics(**m.to_dict()) == m
    assert pace.floor_ms == pytest.approx(1e-6)


def test_without_a_teacher_there_is_no_ratio(artifacts) -> None:
    path, x, y = artifacts
    m = measure_artifact(path, (x, y), MeasureConfig(min_runs=5, min_seconds=0.0))
    assert m.teacher_latency_ms is None and m.latency_ratio is None and m.ratio is None


def test_metrics_round_trip_through_a_dict() -> None:
    m = Metrics(90.0, 1000, 0.5, 0.6, 1.0, 10, 9, 100, 0.5, 0.45, 0.55, 30)
    assert Metrics(**m.to_dict()) == m
    old = {k: v for k, v in m.to_dict().items() if not k.startswith("latency_r")}  # stored before issue 12
    assert Metrics(**old).ratio is None


def test_the_timing_record_names_the_input_and_warm_up_every_latency_uses() -> None:
    """A device following ``timing_protocol`` times on the very array autocomp times on, after as
    many warm-up calls."""
    import numpy as np

    from autocomp.measure import latency, time_rounds, timing_input, timing_protocol

    record = timing_protocol(MeasureConfig(batch=2, threads=3, min_runs=7), (1, 8, 8))
    given = record["input"]
    assert given["shape"] == [2, 1, 8, 8] and (record["batch"], record["threads"], record["min_runs"]) == (2, 3, 7)
    batch, input_shape = 2, (1, 8, 8)  # the names INPUT_RULE is written in
    followed = eval(given["values"], {"numpy": np, "batch": batch, "input_shape": input_shape})  # noqa: S307
    assert followed.dtype == np.float32 and np.array_equal(followed, timing_input(input_shape, batch))
    calls: list[int] = []
    time_rounds([lambda: calls.append(1)], min_runs=1, min_seconds=0.0)
    assert len(calls) == record["warmup_runs"] + 1 == latency.WARMUP_RUNS + 1
