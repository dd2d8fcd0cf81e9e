"""Size of the artifact (bytes of the file) and, for reference, params and MACs of its graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx


def artifact_bytes(path: str | Path) -> int:
    return Path(path).stat().st_size


def _dims(value_info: onnx.ValueInfoProto) -> list[int]:
    # Symbolic dims (the dynamic batch) count as 1: MACs are reported per sample.
    return [d.dim_value if d.HasField("dim_value") else 1 for d in value_info.type.tensor_type.shape.dim]


def graph_macs(model: onnx.ModelProto) -> int:
    """Multiply-accumulates per sample of the Conv/Gemm/MatMul nodes the graph executes."""
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {vi.name: _dims(vi) for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
    shapes.update({i.name: list(i.dims) for i in inferred.graph.initializer})
    macs = 0
    for node in inferred.graph.node:
        out, w = shapes.get(node.output[0]), shapes.get(node.input[1]) if len(node.input) > 1 else None
        if out is None or w is None:
            continue
        if node.op_type == "Conv":
            macs += int(np.prod(out[1:])) * int(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul", "MatMulInteger"):
            k = w[1] if node.op_type == "Gemm" and _trans_b(node) else w[0]
            macs += int(np.prod(out[1:])) * int(k)
        elif node.op_type == "ConvInteger":
            macs += int(np.prod(out[1:])) * int(np.prod(w[1:]))
    return macs


def _trans_b(node: onnx.NodeProto) -> bool:
    return any(a.name == "transB" and a.i == 1 for a in node.attribute)


def graph_params(model: onnx.ModelProto) -> tuple[int, int]:
    """(total, nonzero) elements of the weight tensors (rank >= 2) the graph stores."""
    total = nonzero = 0
    for init in model.graph.initializer:
        if len(init.dims) >= 2 and not init.name.endswith(("_scale", "_zero_point")):
            arr = onnx.numpy_helper.to_array(init)
            total += arr.size
            nonzero += int(np.count_nonzero(arr))
    return total, nonzero
