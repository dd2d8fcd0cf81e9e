"""The latency protocol: shuffled rounds, per-round ratios and their spread (fake clocks, no timing)."""

from __future__ import annotations

import numpy as np
import pytest

from autocomp.measure.latency import MIN_SPREAD, RETIMES, SPELL, Ratio, TeacherPace, ratio_spread, time_rounds
from autocomp.runtimes import device_timing


class FakeClock:
    """``perf_counter`` that only moves when a competitor runs: each call costs what it declares."""

    def __init__(self) -> None:
        self.now = 0.0
        self.calls: list[str] = []

    def __call__(self) -> float:
        return self.now

    def competitor(self, name: str, cost: float, cold: float = 0.0):
        """A callable costing ``cost``, plus ``cold`` when another competitor ran just before it."""

        def run() -> None:
            if self.calls and self.calls[-1] != name:
                self.now += cold
            self.now += cost
            self.calls.append(name)

        return run


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(device_timing.time, "perf_counter", fake)  # the loop local and device timing share
    return fake


def test_ratio_is_the_median_of_per_round_ratios(clock: FakeClock) -> None:
    rounds = time_rounds([clock.competitor("a", 2.0), clock.competitor("b", 1.0)], warmup=0, min_runs=40,
                         min_seconds=0.0)
    ratio = rounds.ratio(0, 1)
    assert ratio.median == pytest.approx(2.0) and ratio.rounds == 40
    # Every round said exactly 2: the spread is the +-3 % floor around it.
    assert (ratio.low, ratio.high) == (pytest.approx(2.0 * (1 - MIN_SPREAD)), pytest.approx(2.0 * (1 + MIN_SPREAD)))
    a, b = rounds.timings()
    assert (a.median_ms, b.median_ms) == (pytest.approx(2000.0), pytest.approx(1000.0))
    assert a.runs == b.runs == 40


def test_order_is_shuffled_every_round_and_calls_stay_together(clock: FakeClock) -> None:
    time_rounds([clock.competitor("a", 1.0), clock.competitor("b", 1.0)], warmup=0, min_runs=60, min_seconds=0.0,
                round_size=3, seed=1)
    rounds = [clock.calls[i : i + 6] for i in range(0, len(clock.calls), 6)]
    assert len(rounds) == 20
    assert all(r in (list("aaabbb"), list("bbbaaa")) for r in rounds)  # round_size calls in a row
    firsts = [r[0] for r in rounds]
    assert 4 <= firsts.count("a") <= 16  # both orders, not a fixed one


def test_a_cold_start_penalty_does_not_make_equal_competitors_differ(clock: FakeClock) -> None:
    """Whoever runs first in a round pays 10 % extra. In a fixed order one competitor always
    pays it (a 10 % 'difference'); shuffled, the two are equal within the spread."""
    fns = [clock.competitor("a", 1.0, cold=0.1), clock.competitor("b", 1.0, cold=0.1)]
    ratio = time_rounds(fns, warmup=0, min_runs=200, min_seconds=0.0).ratio(0, 1)
    assert ratio.contains_one and ratio.used() == 1.0
    assert ratio.low < 1.0 < ratio.high


def test_stops_at_max_runs(clock: FakeClock) -> None:
    rounds = time_rounds([clock.competitor("a", 1e-9)], warmup=2, min_runs=10, min_seconds=1e9, max_runs=25)
    assert rounds.timings()[0].runs == 25
    assert clock.calls.count("a") == 27  # warm-up calls are not timed


def test_ratio_spread_is_the_interquartile_range_with_a_floor() -> None:
    r = ratio_spread([0.8, 0.9, 1.0, 1.1, 1.2])
    assert (r.median, r.low, r.high, r.rounds) == (pytest.approx(1.0), pytest.approx(0.9), pytest.approx(1.1), 5)
    narrow = ratio_spread(np.full(9, 0.5), min_spread=0.02)
    assert (narrow.low, narrow.high) == (pytest.approx(0.49), pytest.approx(0.51))


@pytest.mark.parametrize(("ratio", "used", "contains"), [
    (Ratio(0.62, 0.60, 0.64, 30), 0.62, False),
    (Ratio(1.30, 1.25, 1.35, 30), 1.30, False),
    (Ratio(0.98, 0.95, 1.01, 30), 1.0, True),
    (Ratio(1.02, 1.00, 1.04, 30), 1.0, True),  # an edge at exactly 1 cannot tell them apart
])
def test_used_ratio_snaps_to_one_inside_the_spread(ratio: Ratio, used: float, contains: bool) -> None:
    assert ratio.contains_one is contains
    assert ratio.used() == used


def _spells(clock: FakeClock, teacher_costs: list[float]):
    """``time_once`` for TeacherPace: the artifact costs 0.6 of a normal teacher (1.0), or 0.9 while the
    host runs slower; each call takes the next teacher cost from ``teacher_costs``."""
    costs = iter(teacher_costs)

    def time_once():
        t = next(costs)
        return time_rounds([clock.competitor("a", 0.6 if t <= 1.0 else 0.9 * t), clock.competitor("t", t)],
                           warmup=0, min_runs=5, min_seconds=0.0)

    return time_once


def test_a_pair_timed_while_the_host_ran_slower_is_timed_again_and_the_fastest_teacher_kept(clock: FakeClock) -> None:
    pace = TeacherPace()
    rounds, timings = pace.rounds(_spells(clock, [1.0]), teacher=1)  # the first sets the floor
    assert timings == 1 and pace.floor_ms == pytest.approx(1000.0) and rounds.ratio(0, 1).median == pytest.approx(0.6)
    # Within SPELL of the floor: no second timing.
    rounds, timings = pace.rounds(_spells(clock, [1.0 + SPELL / 2]), teacher=1)
    assert timings == 1
    # Slower, then back: timed again, and the timing with the fast teacher is the one kept.
    rounds, timings = pace.rounds(_spells(clock, [1.4, 1.0, 5.0]), teacher=1)
    assert timings == 2 and rounds.ratio(0, 1).median == pytest.approx(0.6)
    # Slow throughout: RETIMES more timings at most, the least slow kept; the floor does not rise.
    rounds, timings = pace.rounds(_spells(clock, [1.5, 1.3, 1.4, 1.0]), teacher=1)
    assert timings == 1 + RETIMES and rounds.ratio(0, 1).median == pytest.approx(0.9)
    assert pace.floor_ms == pytest.approx(1000.0)
    # A faster teacher lowers the floor.
    pace.rounds(_spells(clock, [0.8]), teacher=1)
    assert pace.floor_ms == pytest.approx(800.0)
    # A tighter rule (experiments/bench_spells.py's paced5) times again what SPELL lets through.
    tight = TeacherPace(floor_ms=1000.0, spell=SPELL / 4)
    assert tight.rounds(_spells(clock, [1.0 + SPELL / 2, 1.0]), teacher=1)[1] == 2
