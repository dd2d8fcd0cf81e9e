"""What ONNX Runtime really executes for an artifact: the graph it optimizes to, dumped through
``SessionOptions.optimized_model_filepath`` (a helper module for tests, not a conftest)."""

from __future__ import annotations

import collections
from dataclasses import dataclass
from pathlib import Path

import onnx

from autocomp.artifact.container import to_bytes

INT8_KERNELS = ("QLinearMatMul", "MatMulIntegerToFloat", "QGemm", "QLinearConv", "ConvInteger", "MatMulInteger",
                "DynamicQuantizeMatMul")
FLOAT_KERNELS = ("MatMul", "FusedMatMul", "Gemm", "FusedGemm", "Conv", "FusedConv", "NchwcConv")


@dataclass
class Executed:
    ops: collections.Counter
    int8_compute: int  # weighted compute nodes on int8 kernels
    float_compute_int8_weight: list[str]  # float compute nodes fed a dequantized int8 weight: should be none
    float_compute_with_weight: int  # float compute nodes with a constant (float) weight


def executed_graph(artifact: str | Path, out: str | Path) -> Executed:
    """Optimize ``artifact`` as an inference session does (CPU, all optimizations) and inspect it."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(out)
    options.log_severity_level = 3
    ort.InferenceSession(to_bytes(artifact), options, providers=["CPUExecutionProvider"])
    graph = onnx.load(str(out)).graph
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}

    def int8_weight(name: str) -> bool:
        node = producer.get(name)
        if node is None or node.op_type != "DequantizeLinear" or node.input[0] not in inits:
            return False
        return inits[node.input[0]].data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)

    bad, with_weight = [], 0
    for node in graph.node:
        if node.op_type in FLOAT_KERNELS and len(node.input) > 1:
            if int8_weight(node.input[1]):
                bad.append(node.name)
            elif node.input[1] in inits:
                with_weight += 1
    ops = collections.Counter(n.op_type for n in graph.node)
    return Executed(ops, sum(ops[k] for k in INT8_KERNELS), bad, with_weight)
