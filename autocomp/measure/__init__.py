"""The one measurement protocol: every objective value of every trial comes from here.

See ``autocomp.measure.protocol`` for the protocol itself.
"""

from autocomp.measure.accuracy import module_accuracy, session_accuracy
from autocomp.measure.latency import (
    Ratio,
    Rounds,
    TeacherPace,
    Timing,
    eager_latency,
    paired_latency,
    paired_rounds,
    ratio_spread,
    reference_latency,
    session_latency,
    time_rounds,
    timing_input,
)
from autocomp.measure.protocol import MeasureConfig, Metrics, measure_artifact, session_for, timing_protocol
from autocomp.measure.size import artifact_bytes, graph_macs, graph_params

__all__ = [
    "MeasureConfig", "Metrics", "Timing", "measure_artifact", "module_accuracy", "session_accuracy",
    "eager_latency", "paired_latency", "session_latency", "artifact_bytes", "graph_macs", "graph_params",
    "Ratio", "Rounds", "paired_rounds", "ratio_spread", "reference_latency", "time_rounds", "session_for",
    "timing_input", "timing_protocol", "TeacherPace",
]
