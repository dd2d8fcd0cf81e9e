"""Low rank: truncated SVD for Linear, spatial SVD for (grouped) convs, only where MACs fall."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from methods_kit import IMAGE, cnn, mlp, seeded, torchvision_model
from torch import nn

from autocomp.errors import AutocompError
from autocomp.methods.lowrank import (
    LowRankConfig,
    factorizable,
    factorize,
    full_rank,
    kept_rank,
    macs_per_output,
)
from autocomp.models.layers import compute_layers
from autocomp.pipeline.compress import apply
from autocomp.plan import LayerPlan, Plan


def test_config_is_validated() -> None:
    LowRankConfig(1.0)
    for bad in (0.0, 1.5):
        with pytest.raises(AutocompError):
            LowRankConfig(bad)


CONVS = [
    {"in_channels": 8, "out_channels": 12, "kernel_size": 3, "padding": 1},
    {"in_channels": 8, "out_channels": 12, "kernel_size": (3, 5), "padding": (1, 2), "stride": (2, 3),
     "dilation": (1, 2)},
    {"in_channels": 8, "out_channels": 12, "kernel_size": 3, "padding": 1, "groups": 4},
    {"in_channels": 8, "out_channels": 8, "kernel_size": 3, "padding": 1, "groups": 8},  # depthwise
    {"in_channels": 8, "out_channels": 16, "kernel_size": 1, "stride": 2, "padding": 1},
]


@pytest.mark.parametrize("spec", CONVS, ids=["3x3", "strided-dilated", "grouped", "depthwise", "1x1-strided"])
def test_full_rank_factorization_is_exact(spec: dict) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(**spec)
    x = torch.randn(2, 8, 13, 11)
    pair = factorize(conv, full_rank(conv))
    with torch.no_grad():
        assert torch.allclose(pair(x), conv(x), atol=1e-5)
    assert pair[0].groups == pair[1].groups == conv.groups


def test_truncated_linear_is_the_best_rank_r_approximation() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(40, 30)
    pair = factorize(layer, 7)
    with torch.no_grad():
        error = float(torch.linalg.norm(layer.weight - pair[1].weight @ pair[0].weight))
        s = torch.linalg.svdvals(layer.weight)
    # Eckart-Young: the error of the best rank-7 approximation is the norm of the dropped values.
    assert error == pytest.approx(float(s[7:].norm()), rel=1e-4)
    assert torch.equal(pair[1].bias, layer.bias)


def test_rank_is_a_fraction_of_full_rank_and_layers_stay_when_macs_would_not_fall() -> None:
    linear = nn.Linear(64, 10)
    assert full_rank(linear) == 10 and kept_rank(linear, 0.25) == 2 and kept_rank(linear, 0.01) == 1
    assert factorizable(linear, 2) and not factorizable(linear, 9)  # 9 * 74 > 640
    grouped = nn.Conv2d(8, 12, 3, groups=4)
    assert full_rank(grouped) == min(2 * 3, 3 * 3)
    assert factorizable(grouped, 1) and not factorizable(grouped, 6)  # 1*8*3 + 12*1*3 < 2*12*9 < 6*(24+36)
    assert not factorizable(nn.Conv2d(8, 8, 3, groups=8), 1)  # depthwise convs are left alone
    # r*8*3 (first factor) + 8*r*3 (second) < 8*8*9 while r < 12; with stride 2 the first factor
    # runs at twice the output width, so r*8*3*2 + 8*r*3 < 576 only while r < 8.
    plain, strided = nn.Conv2d(8, 8, 3), nn.Conv2d(8, 8, 3, stride=2)
    assert factorizable(plain, 11) and not factorizable(plain, 12)
    assert factorizable(strided, 7) and not factorizable(strided, 8)
    assert not factorizable(nn.Conv2d(8, 8, 3, padding="same"), 1)
    model = mlp()
    student = apply(model, Plan(layers={"3": LayerPlan(rank=0.9)}), torch.randn(1, 1, 8, 8))
    assert isinstance(student[3], nn.Linear)  # left alone


def test_linear_model_params_and_macs_are_exact(exporter) -> None:
    teacher = seeded(mlp)
    x = torch.randn(4, 1, 8, 8)
    out = exporter(apply(teacher, Plan.uniform(list(compute_layers(teacher)), rank=0.25), x[:1]), x)
    # Linear(64, 48): rank 12 -> 12 * (64 + 48); Linear(48, 10): rank round(2.5) = 2 -> 2 * 58.
    assert out.params == out.macs == 12 * 112 + 2 * 58
    assert 64 * 48 + 48 * 10 > 2.4 * out.params


def test_conv_model_macs_are_exact(exporter) -> None:
    teacher = seeded(cnn)
    x = torch.randn(4, 1, 8, 8)
    student = apply(teacher, Plan.uniform(list(compute_layers(teacher)), rank=0.25), x[:1])
    # conv(1 -> 8): full rank min(1*3, 8*3) = 3 -> 1: 1*1*3 + 8*1*3 = 27 MACs < 72, factorized too.
    assert isinstance(student[0], nn.Sequential)
    out = exporter(student, x)
    # conv(8 -> 16) at 8x8, full rank 24 -> 6: 6*8*3 (first) + 16*6*3 (second) MACs per pixel.
    conv1 = 64 * (6 * 8 * 3 + 16 * 6 * 3)
    fc1, fc2 = 8 * (64 + 32), 2 * (32 + 10)  # ranks round(0.25 * 32) = 8 and round(2.5) = 2
    conv0 = 64 * (1 * 1 * 3 + 8 * 1 * 3)
    assert out.macs == conv0 + conv1 + fc1 + fc2
    assert macs_per_output(teacher[0], 1) == 27
    with torch.no_grad():
        assert np.abs(out.run(x) - student(x).numpy()).max() < 1e-4


def _expected_macs(teacher: nn.Module, fraction: float, x: torch.Tensor) -> int:
    """MACs of every layer, factorized or not, from the teacher's shapes alone."""
    shapes: dict[nn.Module, tuple] = {}
    hooks = [m.register_forward_hook(lambda m, i, o: shapes.__setitem__(m, (i[0].shape, o.shape)))
             for m in compute_layers(teacher).values()]
    with torch.no_grad():
        teacher(x)
    for h in hooks:
        h.remove()
    total = 0
    for m in compute_layers(teacher).values():
        (in_shape, out_shape), rank = shapes[m], kept_rank(m, fraction)
        if isinstance(m, nn.Linear):
            total += macs_per_output(m, rank if factorizable(m, rank) else None)
            continue
        h_out, w_out = out_shape[2:]
        if not factorizable(m, rank):
            total += macs_per_output(m) * h_out * w_out
            continue
        kh, kw = m.kernel_size
        w_mid = in_shape[3] if kw > 1 else w_out  # the (kh, 1) factor keeps the full width
        total += rank * m.in_channels * kh * h_out * w_mid + m.out_channels * rank * kw * h_out * w_out
    return total


@pytest.mark.parametrize("name", ["mobilenet_v2", pytest.param("resnet18", marks=pytest.mark.slow),
                                  pytest.param("regnet_x_400mf", marks=pytest.mark.slow)])
def test_torchvision_macs_fall_as_the_ranks_imply(exporter, name: str) -> None:
    teacher = torchvision_model(name)
    x = torch.randn(2, *IMAGE)
    student = apply(teacher, Plan.uniform(list(compute_layers(teacher)), rank=0.25), x[:1])
    out = exporter(student, x)
    assert out.macs == _expected_macs(teacher, 0.25, x[:1])
    full = _expected_macs(teacher, 1.0, x[:1])
    assert out.macs < 0.6 * full
    factored = [m for m in student.modules() if isinstance(m, nn.Sequential) and len(m) == 2
                and all(isinstance(f, nn.Conv2d) for f in m) and m[0].kernel_size[1] == 1]
    assert factored
    if any(isinstance(m, nn.Conv2d) and 1 < m.groups < m.in_channels for m in teacher.modules()):
        assert any(f[0].groups > 1 for f in factored)  # grouped convs are factorized too
    with torch.no_grad():
        assert np.abs(out.run(x) - student(x).numpy()).max() < 1e-3 * max(1.0, float(student(x).abs().max()))
