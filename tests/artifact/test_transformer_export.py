"""Transformer graphs export and quantize: nodes found by the weight they carry, every quantized
MatMul/Gemm executed on an int8 kernel, LayerNorm/GELU/Softmax left in float."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from executed_graph import executed_graph
from methods_kit import export_student
from tiny_models import TinyResidual, TinyViT
from torch import nn

from autocomp.artifact.matching import match_layers, scope_name
from autocomp.artifact.onnx_export import bake, to_onnx
from autocomp.models.adapters.attention import explicit_attention
from autocomp.models.layers import compute_layers
from autocomp.pipeline.compress import apply
from autocomp.plan import LayerPlan, Plan


def vit(**kwargs) -> nn.Module:
    torch.manual_seed(0)
    model = TinyViT(**kwargs).eval()
    explicit_attention(model)
    for p in model.parameters():  # nn.TransformerEncoder clones its layer: make the clones differ a little
        p.data += 0.01 * torch.randn_like(p)
    return model


def x_batch(n: int = 64) -> torch.Tensor:
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("node_name,module", [
    ("/layer1/layer1.0/conv1/Conv", "layer1.0.conv1"),
    ("/encoder/layers.0/self_attn/q_proj/MatMul", "encoder.layers.0.self_attn.q_proj"),
    ("/encoder/layers/encoder_layer_0/mlp/mlp.0/MatMul", "encoder.layers.encoder_layer_0.mlp.0"),
    ("/features/features.1/features.1.0/attn/MatMul", "features.1.0.attn"),
    ("/Gather_1", ""),
])
def test_scope_names_follow_the_module_path(node_name: str, module: str) -> None:
    assert scope_name(node_name) == module


def test_every_quantized_layer_of_a_vit_is_found_in_its_graph() -> None:
    model = vit()
    x = x_batch(1)
    names = list(compute_layers(model))
    bits = {n: 2 + i % 7 for i, n in enumerate(names)}  # a different width per layer shows a wrong match
    student = apply(model, Plan(layers={n: LayerPlan(bits=b) for n, b in bits.items()}), x)
    proto, node_bits = to_onnx(student, x, bake(student))
    nodes = {n.name: n for n in proto.graph.node}
    assert len(node_bits) == len(names)
    for node_name, b in node_bits.items():
        layer = scope_name(node_name)
        assert bits[layer] == b, node_name
        assert nodes[node_name].op_type in ("MatMul", "Gemm", "Conv")
    # The attention scores and the weighted sum are no layer's: they carry no weight and no bits.
    weightless = [n for n in proto.graph.node if n.op_type == "MatMul" and n.name not in node_bits]
    assert len(weightless) == 2 * len(model.encoder.layers)


def test_cloned_layers_are_told_apart_by_scope() -> None:
    """``nn.TransformerEncoder`` deep-copies its layer: layer 0 and 1 start with equal weights."""
    torch.manual_seed(0)
    model = TinyViT().eval()
    explicit_attention(model)
    a, b = model.encoder.layers[0].linear1.weight, model.encoder.layers[1].linear1.weight
    assert torch.equal(a, b)
    layers = {n: m for n, m in compute_layers(model).items() if "linear1" in n}
    proto, _ = to_onnx(model, x_batch(1))
    found = match_layers(proto, layers)
    assert sorted(found.values()) == sorted(layers)
    assert all(scope_name(node) == layer for node, layer in found.items())


class Functional(nn.Module):
    """Uses one Linear's weight through ``F.linear`` and calls another module twice."""

    def __init__(self) -> None:
        super().__init__()
        self.read = nn.Linear(64, 32)
        self.twice = nn.Linear(32, 32)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(nn.functional.linear(x.flatten(1), self.read.weight, self.read.bias))
        return self.head(torch.relu(self.twice(torch.relu(self.twice(h)))))


def test_weights_read_by_functions_and_modules_called_twice_are_matched() -> None:
    torch.manual_seed(0)
    model = Functional().eval()
    x = x_batch(1)
    student = apply(model, Plan(layers={"read": LayerPlan(bits=4), "twice": LayerPlan(bits=6)}), x)
    proto, node_bits = to_onnx(student, x, bake(student))
    assert sorted(node_bits.values()) == [4, 6, 6]


def test_batchnorm_folded_convs_still_match() -> None:
    torch.manual_seed(0)
    model = TinyResidual().eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # negative scales too: the match is up to sign per channel
            m.weight.data.uniform_(-1.5, 1.5)
            m.running_var.uniform_(0.5, 2.0)
    x = x_batch(1)
    student = apply(model, Plan(layers={n: LayerPlan(bits=8) for n in compute_layers(model)}), x)
    _, node_bits = to_onnx(student, x, bake(student))
    assert len(node_bits) == len(compute_layers(model))


@pytest.mark.parametrize("bits", [8, 4])
def test_vit_artifact_runs_every_quantized_matmul_on_int8_kernels(bits: int, tmp_path: Path) -> None:
    model = vit()
    x = x_batch()
    names = list(compute_layers(model))
    plan = Plan(layers={n: LayerPlan(bits=bits, sparsity=0.25, rank=0.5 if "linear" in n else 1.0) for n in names})
    student = apply(model, plan, x[:1])
    with torch.no_grad():
        want = student.eval()(x).numpy()
    art = export_student(student, x, tmp_path / "v.acz")
    assert art.info.quantized_nodes == len(compute_layers(student))  # low-rank factors count one each
    run = executed_graph(tmp_path / "v.acz", tmp_path / "executed.onnx")
    assert run.float_compute_int8_weight == [] and run.float_compute_with_weight == 0
    # every weighted layer runs int8; activation-only MatMuls between int8 neighbours (issue 12) may too
    assert run.int8_compute >= art.info.quantized_nodes
    assert run.ops["QLinearMatMul"] + run.ops["MatMulIntegerToFloat"] >= 6 * len(model.encoder.layers)
    for op in ("LayerNormalization", "Softmax"):  # ORT has no int8 kernel for these: they stay float
        assert run.ops[op] + run.ops["SkipLayerNormalization"] >= 1
    q = 2 ** (bits - 1) - 1
    # the plan's layers hold b-bit codes (LayerNorm's scale, an int8 neighbour, keeps ORT's 8-bit one)
    codes = [w for name, w in art.weights().items() if art.info.packed_tensors.get(name) == bits]
    assert codes and all(np.abs(c).max() <= q for c in codes)
    got = art.run(x)
    assert np.abs(got - want).max() < 0.25 * np.abs(want).max()  # int8 activations: close, not equal
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.9


def test_dynamic_mode_quantizes_the_vit_too(tmp_path: Path) -> None:
    model = vit()
    x = x_batch()
    student = apply(model, Plan(layers={n: LayerPlan(bits=8) for n in compute_layers(model)}, quant_mode="dynamic"),
                    x[:1])
    art = export_student(student, x, tmp_path / "d.acz", mode="dynamic")
    ops = {n.op_type for n in art.proto.graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops
    assert art.info.quantized_nodes >= 6 * len(model.encoder.layers)


def test_a_quantized_layer_missing_from_the_graph_fails_the_trial(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never a silently float layer that the Plan quantized: the trial fails and names it."""
    from autocomp.artifact import onnx_export
    from autocomp.errors import TrialFailed

    model = vit()
    x = x_batch(1)
    student = apply(model, Plan(layers={"head": LayerPlan(bits=8)}), x)
    monkeypatch.setattr(onnx_export, "match_layers", lambda proto, layers: {})
    with pytest.raises(TrialFailed, match="quantized layer.*: head"):
        to_onnx(student, x, bake(student))


def test_onnx_nodes_keep_float_ops_float(tmp_path: Path) -> None:
    model = vit()
    x = x_batch()
    student = apply(model, Plan(layers={n: LayerPlan(bits=8) for n in compute_layers(model)}), x[:1])
    art = export_student(student, x, tmp_path / "f.acz")
    quantized = {n.input[0] for n in art.proto.graph.node if n.op_type == "QuantizeLinear"}
    dequantized = {n.output[0] for n in art.proto.graph.node if n.op_type == "DequantizeLinear"}
    floats = [n for n in art.proto.graph.node if n.op_type in ("Softmax", "Erf", "Div")]
    assert len(floats) >= 3 * len(model.encoder.layers)
    for node in floats:  # float ops feed float ops: no int8 round trip around them
        assert not set(node.output) & quantized, node.name
    softmax = [n for n in art.proto.graph.node if n.op_type == "Softmax"]
    assert all(not set(n.input) & dequantized for n in softmax)


def test_calibration_in_chunks_gives_the_same_artifact(tmp_path: Path) -> None:
    """Big inputs are calibrated a few images at a time (memory); the ranges, hence the bytes, are the same."""
    from autocomp.artifact import qdq

    assert [len(c) for c in qdq.calibration_chunks([np.zeros((32, 3, 224, 224), np.float32)])] == [1] * 32
    assert [len(c) for c in qdq.calibration_chunks([np.zeros((32, 3, 32, 32), np.float32)])] == [32]
    model = vit()
    x = x_batch()
    plan = Plan(layers={n: LayerPlan(bits=8) for n in compute_layers(model)})
    whole = export_student(apply(model, plan, x[:1]), x, tmp_path / "whole.acz")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(qdq, "CALIBRATION_VALUES", 64 * 3)  # three images per run
        assert len(qdq.calibration_chunks([x.numpy()])) == 22
        chunked = export_student(apply(model, plan, x[:1]), x, tmp_path / "chunked.acz")
    assert (tmp_path / "whole.acz").read_bytes() == (tmp_path / "chunked.acz").read_bytes()
    assert whole.bytes == chunked.bytes


class _WithSpare(nn.Module):
    """A model with a quantized layer it never calls (a spare head left in by its author)."""

    def __init__(self) -> None:
        super().__init__()
        self.body, self.spare = nn.Linear(64, 10), nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.flatten(1))


def test_a_called_layer_no_node_carries_fails_the_trial_and_an_uncalled_one_does_not(monkeypatch) -> None:
    from autocomp.artifact import onnx_export
    from autocomp.errors import TrialFailed

    model, x = _WithSpare().eval(), x_batch(1)
    bits = {"body": 8, "spare": 8}
    proto, node_bits = to_onnx(model, x, bits)  # the spare layer has no node: not an error
    assert [scope_name(n) for n in node_bits] == ["body"]
    monkeypatch.setattr(onnx_export, "match_layers", lambda proto, layers: {})  # as if no weight were found
    with pytest.raises(TrialFailed, match="no ONNX node carries the weight of 1 quantized layer.*body"):
        to_onnx(model, x, bits)
