"""int8 that runs int8: the graph ONNX Runtime executes, dumped and inspected.

Every quantized Conv/Gemm/MatMul must run on an int8 kernel, and no DequantizeLinear may feed a
QuantizeLinear between two int8 ops (a float detour that costs two conversions and gains
nothing). Where ORT has no int8 kernel for an op the float island it leaves is listed below,
with its reason, and kept short.
"""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from autocomp.artifact import export, open_session, to_bytes
from autocomp.artifact.qdq import constants_as_initializers, tidy_int8_graph
from autocomp.models.layers import compute_layers
from autocomp.pipeline.compress import apply
from autocomp.plan import LayerPlan, Plan

INT8_COMPUTE = ("QLinearConv", "QGemm", "QLinearMatMul", "MatMulIntegerToFloat", "ConvInteger")
FLOAT_COMPUTE = ("Conv", "Gemm", "MatMul", "FusedConv", "FusedGemm", "FusedMatMul")
# Ops ORT's CPU provider has no int8 kernel for, per family: they run in float between a
# DequantizeLinear and a QuantizeLinear (an island of at most MAX_ISLAND ops).
FLOAT_ISLANDS: dict[str, dict[str, str]] = {
    "mobilenet_v3_small": {"HardSigmoid": "Hardswish = x * HardSigmoid(x) and the SE gate: no int8 kernel",
                           "Mul": "the x * HardSigmoid(x) product of Hardswish, fed by the float gate"},
    "densenet121": {"BatchNormalization": "pre-activation BN after each concatenation: it follows no conv, "
                                          "so it cannot fold, and ORT has no int8 BatchNormalization"},
    "convnext_tiny": {"LayerNormalization": "no int8 LayerNorm in ORT",
                      "Div": "GELU's x / sqrt(2) before Erf", "Erf": "GELU: no int8 Erf",
                      "Add": "GELU's 1 + erf", "Mul": "GELU's 0.5 * x * (1 + erf): GELU runs float as a whole"},
    "shufflenet_v2_x0_5": {"ReduceMean": "the final global pool is x.mean([2, 3]): no int8 ReduceMean"},
    "mnasnet0_5": {"ReduceMean": "the final global pool is x.mean([2, 3]): no int8 ReduceMean"},
}
MAX_ISLAND = 5  # GELU: Div, Erf, Add, Mul, Mul
FAMILIES = ["resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "regnet_x_400mf",
            "shufflenet_v2_x0_5", "squeezenet1_0", "densenet121", "convnext_tiny", "mnasnet0_5", "googlenet"]


def executed_graph(acz: Path, tmp_path: Path) -> onnx.ModelProto:
    """The graph ONNX Runtime actually runs (after its fusions), as it dumps it."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "executed.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(to_bytes(acz), options, providers=["CPUExecutionProvider"])
    return onnx.load(options.optimized_model_filepath)


def dq_q_pairs(graph: onnx.ModelProto) -> list[str]:
    """QuantizeLinear nodes fed directly by a DequantizeLinear."""
    producer = {o: n for n in graph.graph.node for o in n.output}
    return [n.name for n in graph.graph.node if n.op_type == "QuantizeLinear"
            and getattr(producer.get(n.input[0]), "op_type", None) == "DequantizeLinear"]


def float_islands(graph: onnx.ModelProto) -> list[list[str]]:
    """For every DequantizeLinear: the float ops downstream of it until a QuantizeLinear or the output."""
    consumers = collections.defaultdict(list)
    for n in graph.graph.node:
        for i in n.input:
            consumers[i].append(n)
    islands = []
    for dq in (n for n in graph.graph.node if n.op_type == "DequantizeLinear"):
        ops, frontier, seen = [], list(consumers[dq.output[0]]), set()
        while frontier:
            node = frontier.pop()
            if node.name in seen or node.op_type in ("QuantizeLinear", "Shape"):
                continue
            seen.add(node.name)
            ops.append(node.op_type)
            frontier += [c for o in node.output for c in consumers[o]]
        islands.append(ops)
    return islands


def _int8_artifact(model: torch.nn.Module, x: torch.Tensor, path: Path):
    plan = Plan(layers={n: LayerPlan(bits=8) for n in compute_layers(model)})
    return export(apply(model, plan, x[:1]), x[:1], [x.numpy()], path)


# --- the two rewrites, on hand-made graphs --------------------------------------------------


def _clip_graph(const_bounds: bool) -> onnx.ModelProto:
    w = numpy_helper.from_array(np.ones((2, 1, 1, 1), np.float32), "w")
    nodes = [helper.make_node("Conv", ["input", "w"], ["c"], name="conv")]
    inits = [w]
    if const_bounds:
        nodes += [helper.make_node("Constant", [], ["lo"], value=numpy_helper.from_array(np.float32(0.0))),
                  helper.make_node("Constant", [], ["hi"], value=numpy_helper.from_array(np.float32(6.0)))]
    else:
        inits += [numpy_helper.from_array(np.float32(0.0), "lo"), numpy_helper.from_array(np.float32(6.0), "hi")]
    nodes.append(helper.make_node("Clip", ["c", "lo", "hi"], ["logits"], name="relu6"))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 4, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2, 4, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_constant_nodes_become_initializers_so_clip_counts_as_one_input_op() -> None:
    from autocomp.artifact.qdq import int8_neighbours

    proto = _clip_graph(const_bounds=True)
    assert int8_neighbours(proto, {"conv": 8}) == []  # the bug: Constant bounds looked like data inputs
    proto = constants_as_initializers(proto)
    assert [n.op_type for n in proto.graph.node] == ["Conv", "Clip"]
    assert {i.name for i in proto.graph.initializer} == {"w", "lo", "hi"}
    assert int8_neighbours(proto, {"conv": 8}) == ["relu6"]
    onnx.checker.check_model(proto)


def test_a_constant_that_is_a_weight_stays_a_node() -> None:
    """Layer matching counts initializer-weighted compute nodes as layers; a Constant weight is none."""
    const_w = helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(np.ones((3, 3), np.float32)))
    mm = helper.make_node("MatMul", ["input", "w"], ["logits"])
    graph = helper.make_graph([const_w, mm], "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])])
    proto = constants_as_initializers(helper.make_model(graph))
    assert [n.op_type for n in proto.graph.node] == ["Constant", "MatMul"]


def _qdq_graph() -> onnx.ModelProto:
    """input -> Q -> DQ -> {Shape -> output 'shape', Transpose -> Q -> DQ -> output 'logits'}."""
    s, z = numpy_helper.from_array(np.float32(0.05), "s"), numpy_helper.from_array(np.uint8(128), "z")
    s2, z2 = numpy_helper.from_array(np.float32(0.05), "s2"), numpy_helper.from_array(np.uint8(128), "z2")
    nodes = [
        helper.make_node("QuantizeLinear", ["input", "s", "z"], ["q"], name="q"),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"], name="dq"),
        helper.make_node("Shape", ["dq"], ["shape"], name="shape"),
        helper.make_node("Transpose", ["dq"], ["t"], name="t", perm=[0, 2, 3, 1]),
        helper.make_node("QuantizeLinear", ["t", "s2", "z2"], ["tq"], name="tq"),  # equal values, other names
        helper.make_node("DequantizeLinear", ["tq", "s2", "z2"], ["logits"], name="tdq"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 2, 3, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 4, 2]),
                               helper.make_tensor_value_info("shape", TensorProto.INT64, [4])], [s, z, s2, z2])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_tidy_reads_shapes_from_int8_and_moves_transposes_in_int8() -> None:
    import onnxruntime as ort

    before = _qdq_graph()
    x = np.random.default_rng(0).standard_normal((1, 2, 3, 4)).astype(np.float32)
    expected = ort.InferenceSession(before.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {
        "input": x})
    after = tidy_int8_graph(_qdq_graph())
    ops = {n.name: n for n in after.graph.node}
    assert ops["shape"].input[0] == "q"  # the shape of the int8 tensor: no dequantization for it
    assert ops["t"].input[0] == "q" and ops["t"].output[0] == "tq"  # the Transpose moves int8 codes
    assert "tq" not in ops and "dq" not in ops  # the DQ -> Q detour and the now unused DQ are gone
    onnx.checker.check_model(after)
    got = ort.InferenceSession(after.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)


def test_tidy_leaves_a_requantization_with_other_parameters() -> None:
    proto = _qdq_graph()
    s2 = next(i for i in proto.graph.initializer if i.name == "s2")
    s2.CopyFrom(numpy_helper.from_array(np.float32(0.1), "s2"))
    after = tidy_int8_graph(proto)
    assert "tq" in {n.name for n in after.graph.node}


def test_relu6_model_quantizes_without_float_detours(tmp_path: Path) -> None:
    """A small ReLU6 network (MobileNetV2's activation, Clip with Constant bounds)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU6(),
                                torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU6(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10)).eval()
    x = torch.randn(16, 3, 8, 8)
    info = _int8_artifact(model, x, tmp_path / "r6.acz")
    ops = collections.Counter(n.op_type for n in executed_graph(info.path, tmp_path).graph.node)
    assert ops["QLinearConv"] == 2 and ops["QGemm"] == 1 and ops["Clip"] == 0
    assert ops["QuantizeLinear"] == 1 and ops["DequantizeLinear"] == 1  # in at the input, out at the logits
    out = open_session(info.path).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        assert np.abs(out - model(x).numpy()).max() < 0.1 * np.abs(out).max()


# --- torchvision families ---------------------------------------------------------------------


@pytest.mark.slow
def test_mobilenet_v2_runs_int8_from_input_to_logits(tmp_path: Path) -> None:
    """Its ReLU6 Clips used to stay float: 36 DequantizeLinear -> QuantizeLinear pairs, 1.0x fp32."""
    from methods_kit import torchvision_model

    model = torchvision_model("mobilenet_v2")
    info = _int8_artifact(model, torch.randn(8, 3, 32, 32), tmp_path / "m.acz")
    graph = executed_graph(info.path, tmp_path)
    ops = collections.Counter(n.op_type for n in graph.graph.node)
    assert dq_q_pairs(graph) == []
    assert ops["QLinearConv"] == 52 and ops["QGemm"] == 1 and ops["Clip"] == 0
    assert ops["DequantizeLinear"] == 1 and ops["QuantizeLinear"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_runs_its_layers_on_int8_kernels(name: str, tmp_path: Path) -> None:
    from methods_kit import torchvision_model

    model = torchvision_model(name)
    info = _int8_artifact(model, torch.randn(8, 3, 32, 32), tmp_path / f"{name}.acz")
    graph = executed_graph(info.path, tmp_path)
    ops = collections.Counter(n.op_type for n in graph.graph.node)
    # Every layer that runs (GoogLeNet's auxiliary heads do not, in eval mode) is a quantized node.
    assert info.quantized_nodes >= len(compute_layers(model)) - (6 if name == "googlenet" else 0)
    assert sum(ops[op] for op in INT8_COMPUTE) == info.quantized_nodes
    assert not any(ops[op] for op in FLOAT_COMPUTE), ops
    assert dq_q_pairs(graph) == []
    allowed = set(FLOAT_ISLANDS.get(name, {}))
    islands = float_islands(graph)
    final = islands.pop() if islands and not islands[-1] else None  # the logits' own DequantizeLinear
    assert final is None or final == []
    for ops_on_island in islands:
        assert set(ops_on_island) <= allowed | {"Flatten"}, (name, ops_on_island)
        assert len(ops_on_island) <= MAX_ISLAND, (name, ops_on_island)
