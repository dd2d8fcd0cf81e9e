"""The one measurement protocol: every objective value of every trial comes from here.

See ``autocomp.measure.protocol`` for the protocol itself.
"""

from autocomp.measure.accuracy import module_accuracy, session_accuracy
from autocomp.measure.latency import Timing, eager_latency, paired_latency, session_latency
from autocomp.measure.protocol import MeasureConfig, Metrics, measure_artifact
from autocomp.measure.size import artifact_bytes, graph_macs, graph_params

__all__ = [
    "MeasureConfig", "Metrics", "Timing", "measure_artifact", "module_accuracy", "session_accuracy",
    "eager_latency", "paired_latency", "session_latency", "artifact_bytes", "graph_macs", "graph_params",
]
