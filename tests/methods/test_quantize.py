"""Quantization: b-bit per-channel weights (qat with STE, ptq, dynamic), int8 activations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from methods_kit import IMAGE, cnn, mlp, seeded, torchvision_model
from onnx import numpy_helper
from tiny_models import wide_mlp
from torch import nn

from autocomp.artifact import export, load_model
from autocomp.errors import AutocompError
from autocomp.methods.quantize import FakeQuant, QuantConfig, qmax, quantize_weight
from autocomp.models.layers import compute_layers
from autocomp.pipeline.compress import apply
from autocomp.pipeline.finetune import finetune, teacher_logits
from autocomp.plan import DistillPlan, LayerPlan, Plan


def _plan(model: nn.Module, bits: int, mode: str = "qat") -> Plan:
    return Plan(layers={n: LayerPlan(bits=bits) for n in compute_layers(model)}, quant_mode=mode)


def test_config_is_validated() -> None:
    QuantConfig(2)
    QuantConfig(8, "dynamic")
    for bad in ({"bits": 1}, {"bits": 9}, {"bits": 4.0}, {"bits": 4, "mode": "int4"}):
        with pytest.raises(AutocompError):
            QuantConfig(**bad)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_fake_quant_rounds_per_channel_and_passes_gradients_straight_through(bits: int) -> None:
    torch.manual_seed(0)
    w = torch.randn(6, 5, requires_grad=True)
    q = FakeQuant(bits)(w)
    codes, scale = quantize_weight(w.detach(), bits)
    assert torch.allclose(q, codes * scale)
    assert codes.abs().max() == qmax(bits)  # each channel's largest weight sits on the grid's end
    for row in q.detach():
        assert len(torch.unique(row)) <= 2 * qmax(bits) + 1
    upstream = torch.randn(6, 5)
    q.backward(upstream)
    assert torch.allclose(w.grad, upstream)  # straight-through: round() does not block the gradient


def test_qat_student_is_on_the_grid_while_fine_tuning_ptq_is_not(tiny_data) -> None:
    teacher = seeded(cnn)
    x, y = tiny_data.train_x, tiny_data.train_y
    soft = teacher_logits(teacher, x)
    settings = DistillPlan(steps=5, lr=1e-2, batch_size=32)
    for mode, on_grid in (("qat", True), ("ptq", False), ("dynamic", False)):
        student = apply(teacher, _plan(teacher, 3, mode), x[:1])
        finetune(student, x, y, soft, settings)
        weight = student[3].weight.detach()  # as the forward pass sees it
        distinct = max(len(torch.unique(ch)) for ch in weight)
        assert (distinct <= 7) == on_grid, mode
    with torch.no_grad():  # ptq leaves the float model alone until export
        ptq = apply(teacher, _plan(teacher, 3, "ptq"), x[:1])
        assert torch.equal(ptq(x), teacher(x))


@pytest.mark.parametrize("mode", ["qat", "ptq", "dynamic"])
def test_artifact_weights_are_the_students_exact_grid(exporter, mode: str) -> None:
    teacher = wide_mlp()
    x = torch.randn(16, 1, 8, 8)
    student = apply(teacher, Plan(layers={"3": LayerPlan(bits=4)}, quant_mode=mode), x[:1])
    out = exporter(student, x, mode)  # bakes in place: student[3].weight is now the exported grid
    (name,) = out.info.packed_tensors
    assert out.info.packed_tensors[name] == 4
    weights = out.weights()
    codes = weights[name].astype(np.float64)
    scale = weights[name.replace("_quantized", "_scale")].astype(np.float64)
    assert np.abs(codes).max() <= 7
    if mode == "dynamic":
        dense = (codes * scale[None, :]).T  # MatMulInteger weight: (in, out), a scale per output column
    else:
        dense = codes * scale[:, None]  # QDQ Gemm weight: (out, in), a scale per output row
    assert np.allclose(dense, student[3].weight.detach().numpy(), rtol=1e-5, atol=1e-7)
    with torch.no_grad():
        ref = student(x).numpy()
    assert np.abs(out.run(x) - ref).max() < 0.05 * np.abs(ref).max()  # only int8 activations differ


@pytest.mark.parametrize("mode", ["qat", "dynamic"])
@pytest.mark.parametrize("bits", [8, 4, 2])
def test_artifact_bytes_fall_as_the_bit_width_implies(exporter, bits: int, mode: str) -> None:
    teacher = wide_mlp()
    x = torch.randn(16, 1, 8, 8)
    dense = exporter(apply(teacher, Plan(), x[:1]), x, name="dense")
    quant = exporter(apply(teacher, _plan(teacher, bits, mode), x[:1]), x, mode, name="q")
    assert set(quant.info.packed_tensors.values()) == {bits}
    ratio = quant.bytes / dense.bytes
    # b bits per weight instead of 32, plus float biases, per-channel scales and the graph.
    assert bits / 32 <= ratio < bits / 32 + 0.05
    assert quant.macs == dense.macs


def test_dynamic_mode_runs_integer_ops_with_per_channel_scales(exporter) -> None:
    teacher = seeded(cnn)
    x = torch.randn(16, 1, 8, 8)
    student = apply(teacher, _plan(teacher, 6, "dynamic"), x[:1])
    out = exporter(student, x, "dynamic")
    ops = [n.op_type for n in out.proto.graph.node]
    assert ops.count("ConvInteger") == 2 and ops.count("MatMulInteger") == 2
    assert "DynamicQuantizeLinear" in ops and "Gemm" not in ops
    assert len(out.info.packed_tensors) == 4 and set(out.info.packed_tensors.values()) == {6}
    weights = out.weights()
    for name in out.info.packed_tensors:
        scale = weights[name.replace("_quantized", "_scale")]
        assert scale.size == weights[name].shape[0 if weights[name].ndim == 4 else 1]  # one per output channel
    unused = [n for n in weights if n.endswith("weight") or n.startswith("onnx::Gemm")]
    assert not unused  # the float weights are gone, only codes are stored
    with torch.no_grad():
        ref = student(x).numpy()
    assert np.abs(out.run(x) - ref).max() < 0.05 * np.abs(ref).max()


def test_static_int8_is_calibrated_on_the_given_batches(tmp_path) -> None:
    teacher = seeded(mlp)
    x = torch.randn(16, 1, 8, 8)
    first_scales = []
    for i, calibration in enumerate((x, 10 * x)):
        student = apply(teacher, _plan(teacher, 8, "ptq"), x[:1])
        export(student, x[:1], [calibration.numpy()], tmp_path / f"{i}.acz", "ptq")
        graph = load_model(tmp_path / f"{i}.acz").graph
        inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        quantize = next(n for n in graph.node if n.op_type == "QuantizeLinear")
        first_scales.append(float(inits[quantize.input[1]]))
    assert first_scales[1] == pytest.approx(10 * first_scales[0], rel=0.05)  # the range follows the data


@pytest.mark.slow  # torchvision-size models (4 s); the quick loop's resnet18 int8 export: tests/artifact/test_export.py
def test_torchvision_resnet18_int8_and_mobilenet_v2_int4(exporter) -> None:
    torch.manual_seed(0)  # random-init nets on noise: int8's error over 4 images ranges 6-19 % of the largest logit
    x = torch.randn(4, *IMAGE)  # across input seeds, so an unseeded input made the bound a draw
    resnet = torchvision_model("resnet18")
    student = apply(resnet, _plan(resnet, 8), x[:1])
    out = exporter(student, x, name="r")
    assert out.info.quantized_nodes == 21 and set(out.info.packed_tensors.values()) == {8}
    assert out.bytes < 0.27 * 4 * sum(m.weight.numel() for m in compute_layers(resnet).values())
    with torch.no_grad():
        ref = student(x).numpy()
    got = out.run(x)
    assert np.linalg.norm(got - ref) < 0.12 * np.linalg.norm(ref)  # 0.09 here (the float net is 0.13 off the export)
    mobile = torchvision_model("mobilenet_v2")
    out = exporter(apply(mobile, _plan(mobile, 4), x[:1]), x, name="m")
    assert out.info.quantized_nodes == 53 and set(out.info.packed_tensors.values()) == {4}
    assert out.bytes < (4 / 32 + 0.03) * 4 * sum(m.weight.numel() for m in compute_layers(mobile).values())
    assert np.isfinite(out.run(x)).all()
