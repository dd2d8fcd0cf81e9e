"""Deployable artifacts: export a student to ``.acz``, load it back, open an ORT session.

Example::

    info = export(student, x[:1], calibration=[x[:32].numpy()], path="model.acz")
    session = open_session("model.acz", threads=1)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from autocomp.artifact.container import load_model, to_bytes, write
from autocomp.artifact.onnx_export import bake, to_onnx
from autocomp.artifact.qdq import quantize
from autocomp.methods.quantize import enable_all_fake_quant

__all__ = ["ArtifactInfo", "export", "load_model", "open_session", "to_bytes"]


@dataclass(frozen=True)
class ArtifactInfo:
    path: Path
    bytes: int
    quantized_nodes: int  # graph nodes running on int8 kernels (or int8 dynamic ops)
    packed_tensors: dict[str, int]  # int8 initializer -> bits it is packed in


def export(
    student: nn.Module,
    example_input: torch.Tensor,
    calibration: list[np.ndarray],
    path: str | Path,
    quant_mode: str = "qat",
) -> ArtifactInfo:
    """Bake masks and quant grids, export ONNX, quantize the chosen nodes, write ``.acz``.

    The student is baked in place: afterwards it is a plain float model with the exported
    weights (fake quantization and masks folded in).
    """
    student = student.cpu()
    enable_all_fake_quant(student)  # ptq/dynamic round their weights now
    baked = bake(student)
    proto, node_bits = to_onnx(baked, example_input.cpu())
    packed: dict[str, int] = {}
    if node_bits:
        mode = "dynamic" if quant_mode == "dynamic" else "static"
        proto, packed = quantize(proto, node_bits, calibration, mode)
    size = write(proto, path, packed)
    return ArtifactInfo(Path(path), size, len(node_bits), packed)


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
