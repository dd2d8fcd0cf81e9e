"""Latency: timed runs after warm-up, competitors interleaved in shuffled rounds, ratios with their spread.

Absolute times on a shared machine drift by tens of percent within a minute; the ratio of two
artifacts timed in the same rounds does not. So every competitor runs ``round_size`` times per
round (default once), the order of the competitors is shuffled each round (a fixed order biased
one timing by about 4 %: the first call of a round pays for what the previous one left in the
caches), and a ratio is the median over rounds of the per-round ratio, with the interquartile
range of those per-round ratios as its spread. Two artifacts whose spread contains 1 are, as far
as this measurement can tell, equally fast.

Why the interquartile range and not a confidence interval of the median: two sessions of the
*same* file (an A/A test, 0.2 s repeats on this machine) gave median ratios from 0.994 to 1.018
(LeNet-5) and 0.985 to 1.035 (ResNet-18), and a 95 % interval of the median excluded 1 in 16 to
25 of 30 repeats. Sessions differ by a few percent in ways more rounds do not average out. The
per-round spread covers most of that (1 of 20 A/A repeats outside it for LeNet-5), and
``min_spread`` widens it to at least +-3 % around the median: with +-1 % an unstructured-pruned
digits CNN, whose graph is the teacher's, was once called faster (0.97, IQR 0.95-0.99; 1.00 and
1.01 in two other runs).

The ratio does drift when the host runs slower for a spell (another tenant on a shared host):
three LeNet-5 files timed back to back beside their teacher here for 4 minutes (396 timings
each), the int8 one ran at 0.646-0.657x (5th-95th percentile) while the teacher took 0.116 ms,
and at 0.67-0.86x in the quarter of the timings where the teacher took 10-40 % longer (the int4
and a mixed one alike); spells came and went within seconds. So a pair timed while the teacher
ran more than ``SPELL`` above the fastest median it was timed at beside an earlier candidate is
timed again, up to ``RETIMES`` more times, and the timing in which the teacher ran fastest is
kept (``TeacherPace``).

Runtime-agnostic: a session is anything with ``session.run(None, {"input": x})``.

Example::

    rounds = time_rounds([lambda: a.run(None, {"input": x}), lambda: b.run(None, {"input": x})])
    ratio = rounds.ratio(0, 1)   # a's time / b's time, e.g. Ratio(median=0.62, low=0.59, high=0.65)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from autocomp.runtimes import beside, device_timing

MIN_SPREAD = 0.03  # the spread of a ratio is at least +-3 % of its median (see above)
WARMUP_RUNS = 5  # untimed calls of each competitor before the first timed round
MAX_RUNS = 2000  # timed calls per competitor at most, whatever min_seconds asks
REFERENCE_RUNS, REFERENCE_MAX_RUNS = 200, 20_000  # the long protocol (reference_latency)
SPELL = 0.10  # the teacher's median this far above its fastest: the host ran slower (see above)
RETIMES = 2  # times a pair is timed again at most when its teacher ran slower than that
# What every latency is measured on, in words a device can follow (``timing_input`` builds it).
INPUT_RULE = "numpy.random.default_rng(0).standard_normal((batch, *input_shape)).astype(numpy.float32)"


@dataclass(frozen=True)
class Timing:
    """Summary of one competitor's calls: median and p90 (ms), number of calls, interquartile range."""

    median_ms: float
    p90_ms: float
    runs: int
    q1_ms: float = float("nan")
    q3_ms: float = float("nan")


@dataclass(frozen=True)
class Ratio:
    """``a / b`` timed in the same rounds: median over rounds and its spread ``[low, high]``."""

    median: float
    low: float
    high: float
    rounds: int

    @property
    def contains_one(self) -> bool:
        """True when the measurement cannot tell the two apart."""
        return self.low <= 1.0 <= self.high

    def used(self) -> float:
        """The ratio an objective should use: exactly 1.0 when the interval contains 1."""
        return 1.0 if self.contains_one else self.median


@dataclass(frozen=True)
class Rounds:
    """Raw timings: every call of every competitor (seconds) and each round's median per competitor."""

    samples: list[np.ndarray]
    per_round: np.ndarray  # (rounds, competitors), seconds

    def timings(self) -> list[Timing]:
        return [_summary(s) for s in self.samples]

    def ratio(self, a: int, b: int, min_spread: float = MIN_SPREAD) -> Ratio:
        """Competitor ``a``'s time over ``b``'s, round by round (see the module docstring)."""
        return ratio_spread(self.per_round[:, a] / self.per_round[:, b], min_spread)


@dataclass
class TeacherPace:
    """The fastest median (ms) the teacher has been timed at beside a candidate, and the rule that
    times a pair again when the host ran slower than that (see the module docstring).

    Example::

        pace = TeacherPace()
        rounds, timings = pace.rounds(lambda: paired_rounds([s, t], shape), teacher=1)
    """

    floor_ms: float | None = None
    spell: float = SPELL  # how far above the floor the teacher may run before the pair is timed again

    def rounds(self, time_once: Callable[[], Rounds], teacher: int) -> tuple[Rounds, int]:
        """``time_once()`` once, or up to ``RETIMES`` more times while its competitor ``teacher``
        ran more than ``spell`` above the floor; the timing whose teacher ran fastest, and how
        many timings ran. The floor follows the fastest teacher seen."""
        best, best_ms, timings = None, float("inf"), 0
        while True:
            rounds = time_once()
            timings += 1
            ms = float(np.median(rounds.samples[teacher])) * 1e3
            if ms < best_ms:
                best, best_ms = rounds, ms
            if self.floor_ms is None or ms <= (1 + self.spell) * self.floor_ms or timings > RETIMES:
                break
        self.floor_ms = best_ms if self.floor_ms is None else min(self.floor_ms, best_ms)
        return best, timings


def ratio_spread(ratios: Sequence[float] | np.ndarray, min_spread: float = MIN_SPREAD) -> Ratio:
    """Median of per-round ratios and their interquartile range, widened to ``median * (1 +- min_spread)``.

    Example::

        ratio_spread([0.9, 1.0, 1.1, 1.0])   # Ratio(median=1.0, low=0.97, high=1.03, rounds=4)
    """
    arr = np.asarray(ratios, dtype=float)
    q1, median, q3 = (float(v) for v in np.percentile(arr, [25, 50, 75]))
    return Ratio(median, min(q1, median * (1 - min_spread)), max(q3, median * (1 + min_spread)), len(arr))


def _summary(samples: np.ndarray) -> Timing:
    arr = np.asarray(samples) * 1e3
    q1, median, q3, p90 = np.percentile(arr, [25, 50, 75, 90])
    return Timing(float(median), float(p90), len(arr), float(q1), float(q3))


def _runner(session) -> Callable[[np.ndarray], object]:  # noqa: ANN001
    return lambda x: session.run(None, {"input": x})


def time_rounds(
    fns: list[Callable[[], object]], warmup: int = WARMUP_RUNS, min_runs: int = 30, min_seconds: float = 0.2,
    max_runs: int = MAX_RUNS, round_size: int = 1, seed: int = 0,
) -> Rounds:
    """Time each zero-argument callable: rounds of ``round_size`` calls each, order shuffled per round.

    Stops once every callable ran ``min_runs`` times and ``min_seconds`` passed, or at ``max_runs``.
    The loop is ``autocomp.runtimes.device_timing``'s, the file a measuring device runs.
    """
    samples, rounds = device_timing.time_rounds(fns, warmup, min_runs, min_seconds, max_runs, round_size, seed)
    return Rounds([np.asarray(s) for s in samples], np.asarray(rounds))


def time_calls(fns: list[Callable[[], object]], **kw: float) -> list[Timing]:
    """Time each zero-argument callable, interleaved in shuffled rounds (see ``time_rounds``)."""
    return time_rounds(fns, **kw).timings()


def timing_input(input_shape: tuple[int, ...], batch: int = 1) -> np.ndarray:
    """The one input every latency is measured on (``INPUT_RULE``): the same array every call and
    every trial, so two artifacts are timed on identical data."""
    return np.random.default_rng(0).standard_normal((batch, *input_shape)).astype(np.float32)


def _timed(sessions: list, x: np.ndarray, **kw: float) -> tuple[list, list]:
    """Every session on ``x``, interleaved in shuffled rounds; run where the sessions live
    (``autocomp.runtimes.beside``: OpenVINO's process for OpenVINO sessions, the device for a
    study measured on one), so no request round trip is inside the timed region. Gives the
    loop's raw lists, which every host can send back."""
    runners = [_runner(s) for s in sessions]
    return device_timing.time_rounds([lambda r=r: r(x) for r in runners], **kw)


def _rounds(sessions: list, x: np.ndarray, **kw: float) -> Rounds:
    samples, rounds = beside(_timed, sessions, x, **kw)
    return Rounds([np.asarray(s) for s in samples], np.asarray(rounds))


def session_latency(session, input_shape: tuple[int, ...], batch: int = 1, **kw: float) -> Timing:  # noqa: ANN001
    return _rounds([session], timing_input(input_shape, batch), **kw).timings()[0]


def paired_rounds(sessions: list, input_shape: tuple[int, ...], batch: int = 1, **kw: float) -> Rounds:  # noqa: ANN001
    """Several sessions on the same input, timed interleaved in shuffled rounds."""
    return _rounds(sessions, timing_input(input_shape, batch), **kw)


def paired_latency(sessions: list, input_shape: tuple[int, ...], batch: int = 1, **kw: float) -> list[Timing]:  # noqa: ANN001
    """Latency of several sessions on the same input, measured interleaved."""
    return paired_rounds(sessions, input_shape, batch, **kw).timings()


def reference_latency(session, input_shape: tuple[int, ...], batch: int = 1, min_seconds: float = 2.0,  # noqa: ANN001
                      min_runs: int = REFERENCE_RUNS, max_runs: int = REFERENCE_MAX_RUNS) -> Timing:
    """The long protocol: one session alone, at least ``min_runs`` calls and ``min_seconds`` seconds.

    Taken once per study for the teacher; every trial's objective is its interleaved ratio
    times this one number, so the machine's drift during the study never enters the front.
    """
    return session_latency(session, input_shape, batch, min_runs=min_runs, min_seconds=min_seconds,
                           max_runs=max_runs)


def eager_latency(model, input_shape: tuple[int, ...], batch: int = 1, threads: int = 1, **kw: float) -> Timing:  # noqa: ANN001
    """Eager PyTorch latency of a module, for reference only (never an objective)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = torch.randn(batch, *input_shape, generator=torch.Generator().manual_seed(0))
        model = model.eval().cpu()
        with torch.inference_mode():
            return time_calls([lambda: model(x)], **kw)[0]
    finally:
        torch.set_num_threads(previous)
