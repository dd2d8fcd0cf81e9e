"""The artifact is the truth: outputs, bytes and MACs of exported students."""

import numpy as np
import pytest
import torch

from autocomp.artifact import export, load_model, open_session
from autocomp.measure import graph_macs
from autocomp.models.layers import compute_layers
from autocomp.pipeline.compress import apply
from autocomp.plan import LayerPlan, Plan


def _export(model, plan, x, path):
    student = apply(model, plan, x[:1])
    info = export(student, x[:1], [x[:32].numpy()], path, plan.quant_mode)
    return student, info


def _uniform(model, **settings) -> Plan:
    return Plan(layers={n: LayerPlan(**settings) for n in compute_layers(model)})


def test_noop_artifact_matches_teacher(tiny_model, tiny_data, tmp_path) -> None:
    x = tiny_data.val_x
    _, info = _export(tiny_model, Plan(), x, tmp_path / "t.acz")
    out = open_session(info.path).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        ref = tiny_model(x).numpy()
    assert np.abs(out - ref).max() < 1e-4


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_quantized_artifact_agrees_with_baked_student(tiny_model, tiny_data, tmp_path, bits: int) -> None:
    x = tiny_data.val_x
    student, info = _export(tiny_model, _uniform(tiny_model, bits=bits), x, tmp_path / "q.acz")
    assert info.quantized_nodes == len(compute_layers(tiny_model))
    assert set(info.packed_tensors.values()) == {bits}
    out = open_session(info.path).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        ref = student(x).numpy()  # baked in place: weights on the b-bit grid, float activations
    # Only int8 activation rounding separates them.
    assert np.abs(out - ref).max() < 0.05 * np.abs(ref).max()
    assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.95


def test_stored_codes_fit_the_bit_width(tiny_model, tiny_data, tmp_path) -> None:
    _, info = _export(tiny_model, _uniform(tiny_model, bits=3), tiny_data.val_x, tmp_path / "q.acz")
    inits = {i.name: i for i in load_model(info.path).graph.initializer}
    for name in info.packed_tensors:
        codes = onnx_array(inits[name])
        assert codes.dtype == np.int8 and np.abs(codes).max() <= 3


def onnx_array(init):
    from onnx import numpy_helper

    return numpy_helper.to_array(init)


def test_size_falls_as_bits_fall_and_sparsity_rises(tiny_data, tmp_path) -> None:
    from tiny_models import tiny_cnn

    torch.manual_seed(0)
    model = tiny_cnn().eval()
    x = tiny_data.val_x
    sizes = {}
    for label, settings in {"fp32": {}, "int8": {"bits": 8}, "int4": {"bits": 4}, "int2": {"bits": 2},
                            "sp50": {"sparsity": 0.5}, "sp90": {"sparsity": 0.9},
                            "int4sp50": {"bits": 4, "sparsity": 0.5}}.items():
        sizes[label] = _export(model, _uniform(model, **settings), x, tmp_path / f"{label}.acz")[1].bytes
    assert sizes["fp32"] > sizes["int8"] > sizes["int4"] > sizes["int2"]
    assert sizes["fp32"] > sizes["sp50"] > sizes["sp90"]
    assert sizes["int4"] > sizes["int4sp50"]


def test_size_ratios_follow_bits_on_lenet5(tmp_path) -> None:
    """Where weights dominate the file, bytes scale with bits (plus scales, graph, DEFLATE)."""
    from autocomp.models.zoo import LeNet5

    torch.manual_seed(0)
    model = LeNet5().eval()
    x = torch.randn(32, 1, 28, 28)
    size = {b: _export(model, _uniform(model, bits=b) if b else Plan(), x, tmp_path / f"{b}.acz")[1].bytes
            for b in (None, 8, 4, 2)}
    assert 0.20 < size[8] / size[None] < 0.30
    assert 0.45 < size[4] / size[8] < 0.55
    assert 0.3 < size[2] / size[4] < 0.6  # 2-bit codes take 3 values: DEFLATE goes below 2 bits


def test_channel_pruned_and_factorized_graphs_have_fewer_macs(tmp_path) -> None:
    from autocomp.models.zoo import LeNet5

    torch.manual_seed(0)
    model = LeNet5().eval()
    x = torch.randn(32, 1, 28, 28)
    macs = {}
    for label, plan in {
        "teacher": Plan(),
        "channels": Plan(layers={"conv1": LayerPlan(channel_ratio=0.5), "conv2": LayerPlan(channel_ratio=0.5),
                                 "fc1": LayerPlan(channel_ratio=0.5)}),
        "lowrank": Plan(layers={"fc1": LayerPlan(rank=0.1), "conv2": LayerPlan(rank=0.25)}),
    }.items():
        _, info = _export(model, plan, x, tmp_path / f"{label}.acz")
        macs[label] = graph_macs(load_model(info.path))
    # LeNet-5 at 28x28: 20*24*24*25 + 50*8*8*500 + 800*500 + 500*10 = 2,293,000 MACs.
    assert macs["teacher"] == 2_293_000
    assert macs["channels"] < 0.55 * macs["teacher"]
    assert macs["lowrank"] < 0.7 * macs["teacher"]


def _executed_ops(acz, tmp_path) -> list[str]:
    """Op types of the graph ONNX Runtime actually runs (after its fusions)."""
    import onnx
    import onnxruntime as ort

    from autocomp.artifact import to_bytes

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(to_bytes(acz), options, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node]


def test_int8_convs_run_on_int8_kernels_in_resnet18(tmp_path) -> None:
    """At init every BatchNorm folds to the same zero bias, which the exporter shares through
    Identity nodes; unshared, all 20 convs must fuse into QLinearConv (else int8 runs slower)."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(8, 3, 32, 32)
    _, info = _export(model, _uniform(model, bits=8), x, tmp_path / "r.acz")
    ops = _executed_ops(info.path, tmp_path)
    assert ops.count("QLinearConv") == 20
    assert "Conv" not in ops
    assert ops.count("QGemm") == 1


def test_mixed_plan_keeps_float_layers_float(tmp_path) -> None:
    from autocomp.models.zoo import LeNet5

    torch.manual_seed(0)
    model = LeNet5().eval()
    plan = Plan(layers={"conv1": LayerPlan(bits=8), "fc1": LayerPlan(bits=4)})
    _, info = _export(model, plan, torch.randn(8, 1, 28, 28), tmp_path / "m.acz")
    ops = _executed_ops(info.path, tmp_path)
    assert ops.count("QLinearConv") == 1 and ops.count("Conv") == 1  # conv2 stays float
    assert info.quantized_nodes == 2 and sorted(info.packed_tensors.values()) == [4, 8]


class _TinyAttention(torch.nn.Module):
    """Linear projections plus an activation x activation MatMul, which no module owns."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.head = torch.nn.Linear(8, 8), torch.nn.Linear(8, 8), torch.nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.reshape(x.shape[0], 8, 8)
        scores = torch.softmax(self.q(tokens) @ self.k(tokens).transpose(1, 2), dim=-1)
        return self.head(scores.flatten(1))


def test_attention_style_model_quantizes(tmp_path) -> None:
    torch.manual_seed(0)
    model = _TinyAttention().eval()
    x = torch.randn(16, 1, 8, 8)
    _, info = _export(model, _uniform(model, bits=8), x, tmp_path / "a.acz")
    assert info.quantized_nodes == 3
    out = open_session(info.path).run(None, {"input": x.numpy()})[0]
    assert out.shape == (16, 10) and np.isfinite(out).all()


@pytest.mark.parametrize("mode", ["qat", "dynamic"])
def test_quantizing_leaves_the_root_logger_as_found(tiny_data, tmp_path, capfd, mode: str) -> None:
    import logging

    from tiny_models import tiny_cnn

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers.clear()  # as in a user's script that configured no logging
    try:
        model = tiny_cnn().eval()
        plan = Plan(layers=_uniform(model, bits=8).layers, quant_mode=mode)
        _export(model, plan, tiny_data.val_x, tmp_path / "q.acz")
        assert root.handlers == [] and root.level == saved[1]  # ORT's logging.warning installs none
    finally:
        root.handlers[:] = saved[0]
    assert "pre-processing" not in capfd.readouterr().err
