"""Open an artifact in a runtime (default ONNX Runtime): the one place sessions are made.

Example::

    session = open_session("trial.acz", threads=1, runtime="openvino")
    logits = session.run(None, {"input": x})[0]
    session.describe()   # runtime, version, device, ISA, precision, threads, streams
"""

from __future__ import annotations

from pathlib import Path

from autocomp.artifact.container import to_bytes


def open_session(path: str | Path, threads: int = 1, device: str = "cpu", runtime: str = "onnxruntime",  # noqa: ANN201
                 precision: str = "fp32", batch: int = 1, measure_on: str | None = None, device_accuracy: bool = False):
    """A session over the expanded artifact in ``runtime`` (``autocomp.runtimes``): ``threads``
    intra-op threads, float parts in ``precision``, prepared for latency at ``batch``; with
    ``measure_on`` (``ssh://host``), its latency is timed on that device (``runtimes.remote``),
    and with ``device_accuracy`` its outputs are computed there too."""
    from autocomp.runtimes import RuntimeOptions, require

    options = RuntimeOptions(threads=threads, device=device, precision=precision, batch=batch)
    model = to_bytes(path)
    session = require(runtime, options).open(model, options)
    if measure_on is None:
        return session
    from autocomp.runtimes.remote import RemoteSession, open_device

    return RemoteSession(session, model, open_device(measure_on, runtime, options), on_device=device_accuracy)
