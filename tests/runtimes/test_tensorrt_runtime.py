"""TensorRT: the graph TensorRT takes is checked here on the CPU; the engine needs a GPU and TensorRT.

The engine tests skip with the reason on machines without them (this project's build machine
and CI have no GPU): they have never run there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto

from autocomp.artifact import export, load_model, open_session
from autocomp.models.layers import compute_layers
from autocomp.pipeline.compress import apply
from autocomp.plan import LayerPlan, Plan
from autocomp.runtimes import get_runtime
from autocomp.runtimes._tensorrt import tensorrt_graph

TRT_PROBLEM = get_runtime("tensorrt").missing()


@pytest.fixture
def int8(tiny_data, tmp_path: Path) -> tuple[Path, np.ndarray]:
    from tiny_models import TinyResidual

    torch.manual_seed(0)
    model = TinyResidual().eval()
    x = tiny_data.val_x
    plan = Plan(layers={n: LayerPlan(bits=8) for n in compute_layers(model)})
    export(apply(model, plan, x[:1]), x[:1], [x[:32].numpy()], tmp_path / "q.acz")
    return tmp_path / "q.acz", x.numpy()


def _zero_point_types(model: onnx.ModelProto) -> set[int]:
    inits = {i.name: i.data_type for i in model.graph.initializer}
    return {inits[n.input[2]] for n in model.graph.node
            if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2 and n.input[2] in inits}


def test_the_tensorrt_graph_is_int8_symmetric_with_float_biases(int8) -> None:
    path, x = int8
    original = load_model(path)
    assert TensorProto.UINT8 in _zero_point_types(original) and TensorProto.INT32 in _zero_point_types(original)
    graph = tensorrt_graph(original)
    onnx.checker.check_model(graph)
    assert _zero_point_types(graph) == {TensorProto.INT8}
    inits = {i.name: i for i in graph.graph.initializer}
    for node in graph.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and node.input[2] in inits:
            assert not onnx.numpy_helper.to_array(inits[node.input[2]]).any()  # zero point 0
    dq_inputs = [inits[n.input[0]].data_type for n in graph.graph.node
                 if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert set(dq_inputs) == {TensorProto.INT8}  # constant weights stay int8; biases became float
    n_q = sum(n.op_type == "QuantizeLinear" for n in original.graph.node)
    assert sum(n.op_type == "QuantizeLinear" for n in graph.graph.node) == n_q  # every activation stays quantized


def test_the_tensorrt_graph_computes_what_the_artifact_does(int8) -> None:
    """Run in ONNX Runtime (S8S8 QDQ): same answers, logits within the wider activation grid's error."""
    import onnxruntime as ort

    path, x = int8
    want = open_session(path).run(None, {"input": x})[0]
    session = ort.InferenceSession(tensorrt_graph(load_model(path)).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x})[0]
    assert np.abs(got - want).max() <= 0.1 * np.abs(want).max()
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.9


@pytest.mark.parametrize("zero", [0, 55, 200])
def test_the_uint8_range_is_kept_exactly(zero: int) -> None:
    """Scale s, zero point z: values in [-z*s, (255-z)*s] come back within half a step of the int8
    grid s' = max(z, 255-z) * s / 127, and values outside are clamped to that range, as uint8 did
    (for z = 0 that is the ReLU ONNX Runtime's quantizer left to the quantizer)."""
    import onnxruntime as ort

    s = 0.1
    low, high = -zero * s, (255 - zero) * s
    x = onnx.helper.make_tensor_value_info("x", TensorProto.FLOAT, [6])
    y = onnx.helper.make_tensor_value_info("y", TensorProto.FLOAT, [6])
    inits = [onnx.numpy_helper.from_array(np.array(s, np.float32), "s"),
             onnx.numpy_helper.from_array(np.array(zero, np.uint8), "z")]
    nodes = [onnx.helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q"),
             onnx.helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq")]
    model = onnx.helper.make_model(onnx.helper.make_graph(nodes, "g", [x], [y], inits),
                                   opset_imports=[onnx.helper.make_opsetid("", 17)])
    values = np.array([low - 7.0, low, 0.0, 3.3, high, high + 7.0], np.float32)
    converted = tensorrt_graph(model)
    assert _zero_point_types(converted) == {TensorProto.INT8}
    out = ort.InferenceSession(converted.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": values})[0]
    step = max(zero, 255 - zero) * s / 127
    assert np.abs(out - np.clip(values, low, high)).max() <= step / 2 + 1e-5


@pytest.mark.skipif(TRT_PROBLEM is not None, reason=f"{TRT_PROBLEM} (never run on a machine without a GPU)")
def test_tensorrt_engine_matches_the_artifact_on_a_gpu(int8) -> None:
    path, x = int8
    session = open_session(path, runtime="tensorrt", device="cuda")
    got = session.run(None, {"input": x})[0]
    want = open_session(path).run(None, {"input": x})[0]
    assert got.shape == want.shape and (got.argmax(1) == want.argmax(1)).mean() >= 0.9
    record = session.describe()
    assert record["runtime"] == "tensorrt" and record["precision"] == "fp32" and record["tf32"] is False
    big = np.concatenate([x] * 2)  # more than the profile's largest batch runs in chunks
    assert session.run(None, {"input": big})[0].shape == (len(big), want.shape[1])
