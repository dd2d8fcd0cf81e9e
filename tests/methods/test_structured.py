"""Structured pruning: channels physically removed, every dependent layer updated, shapes kept."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from methods_kit import IMAGE, Residual, cnn, seeded, torchvision_model
from torch import nn

from autocomp.errors import AutocompError
from autocomp.methods.registry import MethodContext
from autocomp.methods.structured import ChannelPruneConfig, apply_channel_prune
from autocomp.models.layers import compute_layers, output_layers
from autocomp.pipeline.compress import apply
from autocomp.plan import LayerPlan, Plan


def _plan(**ratios: float) -> Plan:
    return Plan(layers={name.replace("__", "."): LayerPlan(channel_ratio=r) for name, r in ratios.items()})


def _uniform(model: nn.Module, ratio: float) -> Plan:
    return Plan.uniform(list(compute_layers(model)), channel_ratio=ratio)


def test_config_is_validated() -> None:
    with pytest.raises(AutocompError):
        ChannelPruneConfig(1.0)
    with pytest.raises(AutocompError):
        ChannelPruneConfig(0.5, norm=3)


def test_uniform_ratio_on_a_residual_depthwise_model(exporter) -> None:
    teacher = seeded(Residual)
    x = torch.randn(4, 1, 8, 8)
    student = apply(teacher, _uniform(teacher, 0.5), x[:1])
    # stem + conv_a are tied by the residual add, the depthwise conv follows them.
    assert student.stem[0].out_channels == student.conv_a.out_channels == 4
    assert student.dw.in_channels == student.dw.out_channels == student.dw.groups == 4
    assert (student.proj.in_channels, student.proj.out_channels) == (4, 8)
    assert (student.head.in_features, student.head.out_features) == (8, 10)  # output layer keeps its classes
    out = exporter(student, x)
    # 4*1*9 + 4*4*9 + 4*9 + 8*4 + 10*8 weights; MACs = 64 pixels * conv weights + head.
    assert out.params == 36 + 144 + 36 + 32 + 80
    assert out.macs == 64 * (36 + 144 + 36 + 32) + 80
    assert out.run(x.numpy()).shape == (4, 10)


def test_coupled_channels_are_pruned_by_the_mean_ratio() -> None:
    teacher = seeded(Residual)
    x = torch.randn(1, 1, 8, 8)
    student = apply(teacher, _plan(stem__0=0.5, conv_a=0.0, proj=0.5), x)
    assert student.stem[0].out_channels == student.conv_a.out_channels == 6  # mean(0.5, 0) of 8
    assert student.proj.out_channels == 8
    # A depthwise conv does not vote: its channels are its input's.
    alone = apply(teacher, _plan(dw=0.5), x)
    assert alone.dw.out_channels == 8 and alone.stem[0].out_channels == 8


def test_output_layer_is_never_pruned(tiny_model) -> None:
    x = torch.randn(2, 1, 8, 8)
    head = sorted(output_layers(tiny_model, x[:1]))[0]
    student = apply(tiny_model, _uniform(tiny_model, 0.75), x[:1])
    assert student.get_submodule(head).out_features == 10
    assert student(x).shape == (2, 10)
    assert sum(p.numel() for p in student.parameters()) < 0.3 * sum(p.numel() for p in tiny_model.parameters())


def _dead_channels_cnn() -> tuple[nn.Module, list[int], list[int]]:
    """tiny_cnn whose conv0 channels 0..3 and conv1 channels 0..7 contribute nothing."""
    torch.manual_seed(0)
    model = cnn().eval()
    conv0, bn0, conv1, fc = model[0], model[1], model[3], model[7]
    dead0, dead1 = [0, 1, 2, 3], list(range(8))
    with torch.no_grad():
        bn0.running_mean.uniform_(-0.5, 0.5)
        bn0.running_var.uniform_(0.5, 2.0)
        for i in dead0:
            conv0.weight[i] = 0
            conv0.bias[i] = 0
            bn0.weight[i] = 0
            bn0.bias[i] = 0
            conv1.weight[:, i] = 0
        for c in dead1:
            conv1.weight[c] = 0
            conv1.bias[c] = 0
            fc.weight[:, c * 4 : (c + 1) * 4] = 0  # the 2x2 pooled pixels of channel c after flatten
    return model, dead0, dead1


@pytest.mark.parametrize("norm", [1, 2])
def test_least_important_channels_go_and_dependents_follow(norm: int) -> None:
    teacher, dead0, dead1 = _dead_channels_cnn()
    x = torch.randn(8, 1, 8, 8)
    student = apply(teacher, Plan(), x[:1])
    ctx = MethodContext(example_input=x[:1], output_layers=output_layers(student, x[:1]))
    apply_channel_prune(student, {"0": ChannelPruneConfig(0.5, norm), "3": ChannelPruneConfig(0.5, norm)}, ctx)
    assert student[0].out_channels == 4 and student[1].num_features == 4
    assert student[3].in_channels == 4 and student[3].out_channels == 8
    assert student[7].in_features == 32  # the flatten before the Linear maps 8 channels x 4 pixels
    # The surviving channels are the live ones, so the function is unchanged.
    assert torch.equal(student[0].weight, teacher[0].weight[4:])
    with torch.no_grad():
        assert torch.allclose(student(x), teacher(x), atol=1e-5)


def _expected_after_uniform(teacher: nn.Module, ratio: float, x: torch.Tensor) -> tuple[int, int]:
    """Params and MACs of a uniformly pruned plain/residual/depthwise CNN, from the teacher alone."""
    outputs = output_layers(teacher, x)
    pixels: dict[nn.Module, int] = {}
    hooks = [m.register_forward_hook(lambda m, i, o: pixels.__setitem__(m, int(np.prod(o.shape[2:]))))
             for m in compute_layers(teacher).values()]
    with torch.no_grad():
        teacher(x)
    for h in hooks:
        h.remove()

    def kept(c: int) -> int:
        return c - int(round(ratio * c))

    params = macs = 0
    for name, m in compute_layers(teacher).items():
        if isinstance(m, nn.Linear):
            n = kept(m.in_features) * (m.out_features if name in outputs else kept(m.out_features))
            params, macs = params + n, macs + n
            continue
        out = m.out_channels if name in outputs else kept(m.out_channels)
        k = m.kernel_size[0] * m.kernel_size[1]
        if m.groups == m.in_channels and m.groups > 1:
            n = out * k  # depthwise: one input channel per output
        else:
            n = out * (m.in_channels if m.in_channels == IMAGE[0] else kept(m.in_channels)) * k
        params, macs = params + n, macs + n * pixels[m]
    return params, macs


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_torchvision_residual_and_depthwise_lose_exactly_the_planned_channels(exporter, name: str) -> None:
    teacher = torchvision_model(name)
    x = torch.randn(2, *IMAGE)
    student = apply(teacher, _uniform(teacher, 0.5), x[:1])
    out = exporter(student, x)
    params, macs = _expected_after_uniform(teacher, 0.5, x[:1])
    assert (out.params, out.macs) == (params, macs)
    full_params, full_macs = _expected_after_uniform(teacher, 0.0, x[:1])
    assert full_params == sum(m.weight.numel() for m in compute_layers(teacher).values())
    assert 0.24 < out.params / full_params < 0.27  # both sides of (almost) every weight halved
    assert 0.24 < out.macs / full_macs < 0.28
    assert out.bytes < 0.27 * 4 * full_params  # float32 weights, a quarter of them left
    got = out.run(x.numpy())
    assert got.shape == (2, 10) and np.isfinite(got).all()


def test_concatenation_squeezenet(exporter) -> None:
    teacher = torchvision_model("squeezenet1_1")
    x = torch.randn(2, *IMAGE)
    student = apply(teacher, _uniform(teacher, 0.5), x[:1])
    fire = student.features[3]  # squeeze -> (expand1x1 | expand3x3) -> concat -> next squeeze
    assert fire.squeeze.out_channels == 8 and fire.expand1x1.out_channels == fire.expand3x3.out_channels == 32
    assert student.features[4].squeeze.in_channels == 64  # 32 + 32 survivors of the concatenation
    full, out = exporter(apply(teacher, Plan(), x[:1]), x, name="teacher"), exporter(student, x)
    assert 0.24 < out.params / full.params < 0.27
    assert out.run(x.numpy()).shape == (2, 10)


def test_reshape_guard_replaces_the_pinned_internal_only_inside_its_block() -> None:
    from importlib.metadata import version

    from torch_pruning.dependency import index_mapping

    from autocomp.methods.structured import _tolerant_reshapes

    assert version("torch-pruning") == "1.6.1"  # the version the guard was written and pinned for
    original = index_mapping.update_reshape_index_mapping
    # Torch-Pruning looks the function up by its module-level name when it maps reshapes.
    assert "update_reshape_index_mapping" in index_mapping.update_index_mapping.__code__.co_names
    with pytest.raises(RuntimeError, match="boom"), _tolerant_reshapes():
        assert index_mapping.update_reshape_index_mapping is not original
        raise RuntimeError("boom")
    assert index_mapping.update_reshape_index_mapping is original


def test_channel_shuffle_shufflenet_prunes_inside_blocks(exporter) -> None:
    teacher = torchvision_model("shufflenet_v2_x0_5")
    x = torch.randn(2, *IMAGE)
    student = apply(teacher, _uniform(teacher, 0.5), x[:1])
    for t_block, s_block in zip(teacher.stage3, student.stage3, strict=True):
        # The channels inside a branch are free; those that cross the shuffle are left alone.
        assert s_block.branch2[0].out_channels == t_block.branch2[0].out_channels // 2
        assert s_block.branch2[3].groups == s_block.branch2[3].out_channels == t_block.branch2[3].out_channels // 2
        assert s_block.branch2[5].out_channels == t_block.branch2[5].out_channels
    full, out = exporter(apply(teacher, Plan(), x[:1]), x, name="teacher"), exporter(student, x)
    assert out.params < 0.6 * full.params and out.macs < 0.6 * full.macs
    with torch.no_grad():
        ref = student(x).numpy()
    assert np.abs(out.run(x.numpy()) - ref).max() < 1e-4 * max(1.0, float(np.abs(ref).max()))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficientnet_b0", "regnet_y_400mf", "densenet121", "resnext50_32x4d"])
def test_squeeze_excitation_grouped_and_dense_models(exporter, name: str) -> None:
    teacher = torchvision_model(name)
    x = torch.randn(2, *IMAGE)
    student = apply(teacher, _uniform(teacher, 0.5), x[:1])
    for m in student.modules():
        if isinstance(m, nn.Conv2d):
            assert m.in_channels % m.groups == 0 and m.out_channels % m.groups == 0
    full, out = exporter(apply(teacher, Plan(), x[:1]), x, name="teacher"), exporter(student, x)
    assert 0.2 < out.params / full.params < 0.3
    assert out.macs < 0.3 * full.macs
    with torch.no_grad():
        ref = student(x).numpy()
    assert np.abs(out.run(x.numpy()) - ref).max() < 1e-3 * max(1.0, float(np.abs(ref).max()))


def test_a_model_the_pruner_cannot_handle_fails_the_trial_not_the_study(monkeypatch) -> None:
    import torch_pruning as tp

    from autocomp.errors import TrialFailed

    def refuse(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        raise RuntimeError("cannot trace this model")

    monkeypatch.setattr(tp.DependencyGraph, "build_dependency", refuse)
    teacher = seeded(Residual)
    with pytest.raises(TrialFailed, match="structured pruning failed: RuntimeError: cannot trace"):
        apply(teacher, _uniform(teacher, 0.5), torch.randn(1, 1, 8, 8))
