"""Student -> deployable ``.acz`` file: bake masks and grids, export ONNX, quantize, pack.

Example::

    info = export(student, x[:1], calibration=[x[:32].numpy()], path="model.acz")
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from autocomp.artifact.container import write
from autocomp.artifact.onnx_export import bake, to_onnx
from autocomp.artifact.qdq import quantize
from autocomp.methods.quantize import enable_all_fake_quant


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
    deflate: bool = True,
) -> ArtifactInfo:
    """Bake masks and quant grids, export ONNX, quantize the chosen nodes, write ``.acz``
    (``deflate=False``: entries stored, for a file that is only timed, ``container.write``).

    The student is baked in place: afterwards it is a plain float model with the exported
    weights (fake quantization and masks folded in).
    """
    student = student.cpu()
    enable_all_fake_quant(student)  # ptq/dynamic round their weights now
    layer_bits = bake(student)
    proto, node_bits = to_onnx(student, example_input.cpu(), layer_bits)
    packed: dict[str, int] = {}
    if node_bits:
        mode = "dynamic" if quant_mode == "dynamic" else "static"
        proto, packed = quantize(proto, node_bits, calibration, mode)
    size = write(proto, path, packed, deflate)
    return ArtifactInfo(Path(path), size, len(node_bits), packed)
