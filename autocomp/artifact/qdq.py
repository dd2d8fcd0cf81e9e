"""Int8 QDQ quantization of the chosen graph nodes with ONNX Runtime's quantizer.

ORT inserts QuantizeLinear/DequantizeLinear pairs and calibrates activation scales (static)
so its CPU provider fuses them into int8 kernels. Weight codes and scales are then overwritten
with the exact b-bit grid the student was trained on: for a ``bits`` layer every stored int8
code lies in ``[-(2**(bits-1) - 1), 2**(bits-1) - 1]`` and the container packs it in ``bits``.
Per-channel grids survive BatchNorm folding (folding rescales whole output channels), so the
codes are recovered exactly from the folded float weights.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np
import onnx
from onnx import numpy_helper

from autocomp.methods.quantize import qmax

QUANT_SUFFIX = "_quantized"


class _Batches:
    """ORT CalibrationDataReader over a few input batches."""

    def __init__(self, batches: Iterable[np.ndarray]) -> None:
        self._it = iter([{"input": b} for b in batches])

    def get_next(self) -> dict | None:
        return next(self._it, None)

    def rewind(self) -> None:  # pragma: no cover - ORT calls it only for some calibrators
        pass


def quantize(
    proto: onnx.ModelProto,
    node_bits: dict[str, int],
    calibration: list[np.ndarray],
    mode: str = "static",
) -> tuple[onnx.ModelProto, dict[str, int]]:
    """Return the QDQ (static) or integer-op (dynamic) graph and ``{int8 initializer: bits}``."""
    from onnxruntime.quantization import (  # deferred: heavy import
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    class Reader(_Batches, CalibrationDataReader):
        pass

    # ORT logs a "consider pre-processing" warning on every call; it is advice, not a fault.
    logging.getLogger().setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp, "fp32.onnx"), Path(tmp, "q.onnx")
        onnx.save(proto, src)
        if mode == "dynamic":
            quantize_dynamic(
                src, dst, per_channel=True, weight_type=QuantType.QInt8,
                nodes_to_quantize=list(node_bits), extra_options={"WeightSymmetric": True},
            )
        else:
            quantize_static(
                src, dst, Reader(calibration), quant_format=QuantFormat.QDQ, per_channel=True,
                weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                nodes_to_quantize=list(node_bits), extra_options={"WeightSymmetric": True},
            )
        quantized = onnx.load(dst)
    return quantized, _set_exact_codes(proto, quantized, node_bits)


def _set_exact_codes(
    fp32: onnx.ModelProto, quantized: onnx.ModelProto, node_bits: dict[str, int]
) -> dict[str, int]:
    floats = {i.name: i for i in fp32.graph.initializer}
    weight_bits: dict[str, int] = {}
    for node in fp32.graph.node:
        if node.name in node_bits and len(node.input) > 1 and node.input[1] in floats:
            weight_bits[node.input[1]] = node_bits[node.name]
    inits = {i.name: i for i in quantized.graph.initializer}
    stored: dict[str, int] = {}
    for name, bits in weight_bits.items():
        q_name = name + QUANT_SUFFIX
        if q_name not in inits:
            continue  # ORT left this node in float (unsupported pattern): nothing to pack
        w = numpy_helper.to_array(floats[name]).astype(np.float64)
        scale_init = inits[name + "_scale"]
        n_scales = int(np.prod(scale_init.dims)) if scale_init.dims else 1
        axis = next((a for a, d in enumerate(w.shape) if d == n_scales), 0) if n_scales > 1 else None
        if axis is None:
            amax = np.abs(w).max(keepdims=True)
        else:
            amax = np.abs(w).max(axis=tuple(d for d in range(w.ndim) if d != axis), keepdims=True)
        scale = np.maximum(amax, 1e-12) / qmax(bits)
        codes = np.clip(np.round(w / scale), -qmax(bits), qmax(bits)).astype(np.int8)
        inits[q_name].CopyFrom(numpy_helper.from_array(codes, q_name))
        inits[name + "_scale"].CopyFrom(
            numpy_helper.from_array(scale.reshape(scale_init.dims).astype(np.float32), name + "_scale")
        )
        stored[q_name] = bits
    return stored
