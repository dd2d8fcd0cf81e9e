"""ONNX Runtime (the default): CPU execution provider, or CUDA's with ``device="cuda"`` where installed.

Sequential execution, ``threads`` intra-op threads, one inter-op thread, every graph
optimization on: the settings autocomp has always measured with. ONNX Runtime's CPU provider
runs float parts in float32 only, so ``fp32`` is its one precision.

Example::

    session = get_runtime("onnxruntime").open(onnx_bytes, RuntimeOptions(threads=1))
    session.run(None, {"input": x})[0]
"""

from __future__ import annotations

from typing import Any

from autocomp.runtimes.base import Runtime, RuntimeOptions, host_cpu, register


class OrtSession:
    """An ``onnxruntime.InferenceSession`` plus ``describe()``; every other attribute is the
    InferenceSession's own (``get_inputs()``, ``get_providers()`` ...)."""

    def __init__(self, session: Any, options: RuntimeOptions) -> None:
        self._session = session
        self._options = options
        self.run = session.run  # bound once: the timed call costs what a bare session's does

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)

    def describe(self) -> dict[str, Any]:
        import onnxruntime as ort

        providers = self._session.get_providers()
        on_gpu = providers[0] != "CPUExecutionProvider"
        return {"runtime": OnnxRuntime.name, "label": OnnxRuntime.label, "version": ort.__version__,
                "device": "CUDA" if on_gpu else "CPU", "providers": providers, **host_cpu(),
                "precision": self._options.precision, "threads": self._options.threads, "inter_op_threads": 1,
                "execution_mode": "sequential", "graph_optimization": "all"}


@register
class OnnxRuntime(Runtime):
    name = "onnxruntime"
    label = "ONNX Runtime"
    package = "onnxruntime"
    precisions = ("fp32",)

    def version(self) -> str:
        import onnxruntime as ort

        return ort.__version__

    def open(self, model: bytes, options: RuntimeOptions = RuntimeOptions()) -> OrtSession:
        import onnxruntime as ort  # deferred: keeps `import autocomp` fast

        so = ort.SessionOptions()
        so.intra_op_num_threads = options.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        if options.device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        return OrtSession(ort.InferenceSession(model, so, providers=providers), options)
