"""Open an artifact in ONNX Runtime, the default deploy runtime."""

from __future__ import annotations

from pathlib import Path

from autocomp.artifact.container import to_bytes


def open_session(path: str | Path, threads: int = 1, device: str = "cpu"):  # noqa: ANN201
    """An ONNX Runtime session over the expanded artifact (``threads`` intra-op threads)."""
    import onnxruntime as ort  # deferred: keeps `import autocomp` fast

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(to_bytes(path), options, providers=providers)
