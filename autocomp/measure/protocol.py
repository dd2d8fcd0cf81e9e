"""The one measurement protocol. Every objective value of every trial comes from here.

- **accuracy**: top-1 (percent) of the artifact, loaded from its file into the study's runtime
  (``MeasureConfig.runtime``: ONNX Runtime by default, ``autocomp.runtimes``), on the whole
  validation split.
- **size**: bytes of the artifact file (``.acz``), nothing computed.
- **latency**: wall time of the artifact in that runtime, ``batch`` inputs (default 1)
  on ``threads`` intra-op threads (default 1), after warm-up, at least 30 runs and 0.2 s. The
  teacher's artifact is timed in the same rounds, the order shuffled each round
  (``autocomp.measure.latency``): ``latency_ratio`` is the median of the per-round ratios and
  ``[latency_ratio_low, latency_ratio_high]`` their spread (interquartile range, at least +-3 %).
  ``latency_ms``/``teacher_latency_ms`` are the two medians of this measurement (p90 too). A
  pair timed while the host ran slower (the teacher >10 % above its fastest median beside an
  earlier candidate, ``TeacherPace``) is timed again, up to twice; ``latency_timings`` counts them.
  The study's latency objective is built from the ratio (``autocomp.study.create.Objective``).
- **reference only**: params and MACs of the executed graph, eager-PyTorch latency.
- **the record**: ``timing_protocol(config, input_shape)`` names the timing input, the warm-up
  and the rounds, so a device can time the same way.

Example::

    m = measure_artifact("trial.acz", (val_x, val_y), teacher_session=t, config=MeasureConfig())
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from autocomp.artifact import load_model, open_session
from autocomp.measure.accuracy import session_accuracy
from autocomp.measure.latency import (
    INPUT_RULE,
    MAX_RUNS,
    MIN_SPREAD,
    REFERENCE_MAX_RUNS,
    REFERENCE_RUNS,
    RETIMES,
    SPELL,
    WARMUP_RUNS,
    Ratio,
    TeacherPace,
    paired_rounds,
    session_latency,
)
from autocomp.measure.size import artifact_bytes, graph_macs, graph_params
from autocomp.runtimes import RuntimeOptions, summary


@dataclass(frozen=True)
class MeasureConfig:
    batch: int = 1
    threads: int = 1
    device: str = "cpu"
    min_runs: int = 30
    min_seconds: float = 0.2
    min_spread: float = MIN_SPREAD  # a ratio's spread is at least +-this fraction of its median
    reference_seconds: float = 2.0  # the teacher's reference time, once per study (long protocol)
    runtime: str = "onnxruntime"  # where accuracy and latency are measured (autocomp.runtimes)
    precision: str = "fp32"  # float parts in fp32 unless the runtime's reduced precision is asked for
    measure_on: str | None = None  # ssh://host: latency timed on that device (autocomp.runtimes.remote)
    device_accuracy: bool = False  # and the validation pass run there too

    @property
    def options(self) -> RuntimeOptions:
        """What the runtime is opened with: these settings, passed whole."""
        return RuntimeOptions(threads=self.threads, device=self.device, precision=self.precision, batch=self.batch)


@dataclass(frozen=True)
class Metrics:
    accuracy: float
    size_bytes: int
    latency_ms: float
    latency_p90_ms: float
    teacher_latency_ms: float | None
    params: int
    nonzero_params: int
    macs: int
    # The teacher timed in the same shuffled rounds (None without a teacher session):
    latency_ratio: float | None = None  # median over rounds of (this artifact's time / the teacher's)
    latency_ratio_low: float | None = None  # spread of the per-round ratios: interquartile range,
    latency_ratio_high: float | None = None  # at least +-min_spread around the median
    latency_rounds: int | None = None
    latency_timings: int | None = None  # paired timings run: 1, or more when the host ran slower (TeacherPace)
    runtime: str | None = None  # the runtime it was measured on, in one line (autocomp.runtimes.summary)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def ratio(self) -> Ratio | None:
        if self.latency_ratio is None:
            return None
        return Ratio(self.latency_ratio, self.latency_ratio_low, self.latency_ratio_high, self.latency_rounds or 0)


def session_for(path: str | Path, config: MeasureConfig = MeasureConfig()):  # noqa: ANN201
    """The artifact opened on the config's runtime, with its threads, precision and latency batch.

    Example::

        teacher = session_for("teacher.acz", MeasureConfig(runtime="openvino"))
    """
    return open_session(path, config.threads, config.device, runtime=config.runtime, precision=config.precision,
                        batch=config.batch, measure_on=config.measure_on, device_accuracy=config.device_accuracy)


def measure_artifact(
    path: str | Path,
    val: Any,
    config: MeasureConfig = MeasureConfig(),
    teacher_session=None,  # noqa: ANN001
    pace: TeacherPace | None = None,
) -> Metrics:
    """Accuracy, bytes and latency of the artifact at ``path``: accuracy on ``val`` (an
    ``autocomp.data.EvalSet`` streaming batches, or an ``(x, y)`` pair of arrays), latency as its
    ratio to ``teacher_session`` timed interleaved when one is given; ``pace`` (the caller's, kept
    across its candidates) times the pair again while the teacher ran slower than its fastest."""
    x, y = val if isinstance(val, tuple) else (val, None)
    session = session_for(path, config)
    accuracy = session_accuracy(session, x, y)
    shape = tuple(x.shape[1:])
    kw = {"min_runs": config.min_runs, "min_seconds": config.min_seconds}
    ratio, timings = None, None
    if teacher_session is not None:
        rounds, timings = (pace or TeacherPace()).rounds(
            lambda: paired_rounds([session, teacher_session], shape, config.batch, **kw), teacher=1)
        mine, teacher = rounds.timings()
        ratio = rounds.ratio(0, 1, config.min_spread)
    else:
        mine, teacher = session_latency(session, shape, config.batch, **kw), None
    proto = load_model(path)
    params, nonzero = graph_params(proto)
    return Metrics(
        accuracy=accuracy,
        size_bytes=artifact_bytes(path),
        latency_ms=mine.median_ms,
        latency_p90_ms=mine.p90_ms,
        teacher_latency_ms=teacher.median_ms if teacher else None,
        params=params,
        nonzero_params=nonzero,
        macs=graph_macs(proto),
        latency_ratio=ratio.median if ratio else None,
        latency_ratio_low=ratio.low if ratio else None,
        latency_ratio_high=ratio.high if ratio else None,
        latency_rounds=ratio.rounds if ratio else None,
        latency_timings=timings,
        runtime=summary(session.describe()),
    )


def timing_protocol(config: MeasureConfig, input_shape: tuple[int, ...]) -> dict:
    """What every latency of a study is measured on and how, as a record a device can follow.

    ``input``: the one array every timed call gets (shape, dtype, how its values are drawn);
    ``warmup_runs`` untimed calls per competitor, then rounds (``min_runs``/``min_seconds``/
    ``max_runs``), the order shuffled each round; ``teacher_reference``: the teacher's long
    measurement, once per study. The study stores it (``autocomp.study``) beside ``preprocessing``.

    Example::

        timing_protocol(MeasureConfig(), (1, 8, 8))["input"]["shape"]   # [1, 1, 8, 8]
    """
    shape = [config.batch, *(int(v) for v in input_shape)]
    return {
        "input": {"name": "input", "shape": shape, "dtype": "float32", "values": INPUT_RULE,
                  "same_array_every_call": True},
        "runtime": config.runtime, "device": config.device, "precision": config.precision,
        "batch": config.batch, "threads": config.threads,
        "warmup_runs": WARMUP_RUNS,  # per competitor, untimed, before the first round
        "min_runs": config.min_runs, "min_seconds": config.min_seconds, "max_runs": MAX_RUNS,
        "round_size": 1,
        "retime": f"when the teacher's median in a pair's rounds is more than {SPELL:.0%} above the fastest median "
                  f"it was timed at beside an earlier candidate, the pair is timed again, up to {RETIMES} more "
                  "times, and the timing in which the teacher ran fastest is kept (latency_timings: how many ran)",
        "rounds": "each round times every competitor (the trial's artifact and the teacher's) once, in an order "
                  "shuffled by numpy.random.default_rng(0).permutation; rounds continue until each ran min_runs "
                  "times and min_seconds passed, or max_runs",
        "clock": "time.perf_counter around session.run(None, {'input': x})",
        "statistics": "latency_ms / latency_p90_ms: median / p90 of the timed calls; latency_ratio: median over "
                      "rounds of (artifact / teacher); low/high: their interquartile range, at least "
                      f"+-{config.min_spread:g} x the median",
        "teacher_reference": {"warmup_runs": WARMUP_RUNS, "min_runs": REFERENCE_RUNS,
                              "min_seconds": config.reference_seconds, "max_runs": REFERENCE_MAX_RUNS,
                              "what": "the teacher alone, once per study; a trial's latency objective is its "
                                      "ratio times this median"},
    }
