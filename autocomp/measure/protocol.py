"""The one measurement protocol. Every objective value of every trial comes from here.

- **accuracy**: top-1 (percent) of the artifact, loaded from its file into ONNX Runtime, on the
  whole validation split.
- **size**: bytes of the artifact file (``.acz``), nothing computed.
- **latency**: median wall time (ms) of the artifact in ONNX Runtime on CPU, ``batch`` inputs
  (default 1) on ``threads`` intra-op threads (default 1), after warm-up, at least 30 runs and
  0.2 s; p90 recorded too. The teacher's artifact is timed in the same rounds (interleaved) so
  ``latency_ratio`` holds on a noisy machine.
- **reference only**: params and MACs of the executed graph, eager-PyTorch latency.

Example::

    m = measure_artifact("trial.acz", val_x, val_y, teacher_session=t, config=MeasureConfig())
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from autocomp.artifact import load_model, open_session
from autocomp.measure.accuracy import session_accuracy
from autocomp.measure.latency import paired_latency, session_latency
from autocomp.measure.size import artifact_bytes, graph_macs, graph_params


@dataclass(frozen=True)
class MeasureConfig:
    batch: int = 1
    threads: int = 1
    device: str = "cpu"
    min_runs: int = 30
    min_seconds: float = 0.2


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

    def to_dict(self) -> dict:
        return asdict(self)


def measure_artifact(
    path: str | Path,
    val_x: np.ndarray,
    val_y: np.ndarray,
    config: MeasureConfig = MeasureConfig(),
    teacher_session=None,  # noqa: ANN001
) -> Metrics:
    session = open_session(path, threads=config.threads, device=config.device)
    accuracy = session_accuracy(session, val_x, val_y)
    shape = tuple(val_x.shape[1:])
    kw = {"min_runs": config.min_runs, "min_seconds": config.min_seconds}
    if teacher_session is not None:
        mine, teacher = paired_latency([session, teacher_session], shape, config.batch, **kw)
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
    )
