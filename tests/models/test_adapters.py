"""Attention made reachable: the explicit modules compute what the originals did, keep their
callers' contract, and take pruning, low rank and head-consistent channel pruning."""

from __future__ import annotations

import copy

import pytest
import torch
from tiny_models import TinyViT
from torch import nn

from autocomp.methods.lowrank import LowRankPair, factorize
from autocomp.models.adapters.attention import (
    ExplicitMultiheadAttention,
    explicit_attention,
    explicit_copy,
    prune_head_dims,
)
from autocomp.models.layers import called_layers, compute_layers
from autocomp.pipeline.compress import apply
from autocomp.plan import LayerPlan, Plan


def _inputs(batch_first: bool, kdim: int = 16, vdim: int = 16) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(1)

    def shape(n: int, length: int, d: int) -> tuple[int, int, int]:
        return (n, length, d) if batch_first else (length, n, d)

    return (torch.randn(*shape(3, 4, 16), generator=gen), torch.randn(*shape(3, 6, kdim), generator=gen),
            torch.randn(*shape(3, 6, vdim), generator=gen))


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("extra", [{}, {"kdim": 5, "vdim": 7}, {"bias": False}])
@pytest.mark.parametrize("call", ["plain", "padding", "float_mask", "bool_mask", "per_head_weights"])
def test_explicit_attention_gives_multihead_attention_outputs(batch_first: bool, extra: dict, call: str) -> None:
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=batch_first, **extra).eval()
    explicit = ExplicitMultiheadAttention.from_mha(mha)
    q, k, v = _inputs(batch_first, extra.get("kdim", 16), extra.get("vdim", 16))
    kwargs: dict = {}
    if call == "padding":
        kwargs["key_padding_mask"] = torch.tensor([[False] * 5 + [True], [False] * 6, [False] * 3 + [True] * 3])
    elif call == "float_mask":
        kwargs["attn_mask"] = torch.randn(4, 6)
    elif call == "bool_mask":
        kwargs["attn_mask"] = torch.rand(3 * 4, 4, 6) > 0.7
        kwargs["attn_mask"][..., 0] = False  # every query keeps one key
    elif call == "per_head_weights":
        kwargs["average_attn_weights"] = False
    with torch.no_grad():
        want_out, want_w = mha(q, k, v, need_weights=True, **kwargs)
        got_out, got_w = explicit(q, k, v, need_weights=True, **kwargs)
        plain_out, plain_w = explicit(q, k, v, need_weights=False, **kwargs)
    assert torch.allclose(got_out, want_out, atol=1e-5)
    assert torch.allclose(got_w, want_w, atol=1e-6)
    assert torch.allclose(plain_out, want_out, atol=1e-5) and plain_w is None


def test_unbatched_inputs_and_the_original_state_dict_layout() -> None:
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4).eval()
    explicit = ExplicitMultiheadAttention(16, 4).eval()
    explicit.load_state_dict(mha.state_dict())  # in_proj_weight/in_proj_bias, packed
    x = torch.randn(5, 16)
    with torch.no_grad():
        assert torch.allclose(explicit(x, x, x)[0], mha(x, x, x)[0], atol=1e-5)
        assert torch.allclose(explicit(x, x, x)[1], mha(x, x, x)[1], atol=1e-6)
    assert torch.equal(explicit.in_proj_weight, mha.in_proj_weight)  # the attribute callers read
    assert torch.equal(explicit.in_proj_bias, mha.in_proj_bias)


@pytest.mark.parametrize("norm_first", [True, False])
def test_transformer_encoder_layer_runs_the_explicit_projections(norm_first: bool) -> None:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True, norm_first=norm_first).eval()
    ref = copy.deepcopy(layer)
    assert explicit_attention(layer) == ["self_attn"]
    assert explicit_attention(layer) == []  # idempotent
    x = torch.randn(2, 5, 16)
    with torch.no_grad():  # eval + no grad: the original takes its fused fast path, the swap must not
        assert torch.allclose(layer(x), ref(x), atol=1e-5)
        calls = []
        hook = layer.self_attn.q_proj.register_forward_hook(lambda *a: calls.append(1))
        layer(x)
        hook.remove()
    assert calls == [1]


def test_modules_it_cannot_express_are_left_alone() -> None:
    holder = nn.Sequential(nn.MultiheadAttention(16, 4, add_bias_kv=True))
    assert explicit_attention(holder) == [] and isinstance(holder[0], nn.MultiheadAttention)


def test_a_model_given_in_python_is_never_changed() -> None:
    model = TinyViT().eval()
    clone = explicit_copy(model)
    assert clone is not model
    assert isinstance(model.encoder.layers[0].self_attn, nn.MultiheadAttention)
    assert isinstance(clone.encoder.layers[0].self_attn, ExplicitMultiheadAttention)
    assert explicit_copy(clone) is clone  # nothing left to swap: no copy


def test_low_rank_keeps_the_attribute_contract_of_what_it_replaces() -> None:
    """The issue-16 crash: low rank made ``linear1``/``out_proj`` a Sequential, and
    ``TransformerEncoderLayer.forward`` reads ``.weight`` of both on its fast path."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 4, 64, dropout=0.0, batch_first=True).eval()
    x = torch.randn(2, 5, 16)
    layer.linear1 = factorize(layer.linear1, 4)  # the original attention: its fast path reads linear1.weight
    assert isinstance(layer.linear1, LowRankPair) and layer.linear1.weight.shape == (64, 16)
    with torch.no_grad():
        fast = layer(x)
        layer.train()  # the slow path calls the pair itself
        slow = layer(x)
    assert torch.allclose(fast, slow, atol=1e-5)


@pytest.mark.parametrize("groups", [1, 2])
def test_low_rank_pair_weight_is_the_dense_kernel(groups: int) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1, stride=(1, 2), groups=groups)
    pair = factorize(conv, 2)
    x = torch.randn(2, 4, 7, 9)
    with torch.no_grad():
        dense = nn.functional.conv2d(x, pair.weight, pair.bias, conv.stride, conv.padding, groups=groups)
        assert torch.allclose(dense, pair(x), atol=1e-5)
    linear = factorize(nn.Linear(8, 6), 3)
    assert torch.allclose(linear.weight, linear[1].weight @ linear[0].weight)


def test_vit_compresses_every_projection_and_runs() -> None:
    torch.manual_seed(0)
    model = TinyViT(mlp=64, dim=32, heads=4).eval()
    explicit_attention(model)
    names = list(compute_layers(model))
    assert "encoder.layers.0.self_attn.q_proj" in names and "encoder.layers.1.self_attn.out_proj" in names
    x = torch.randn(3, 1, 8, 8)
    plan = Plan(layers={n: LayerPlan(rank=0.25, channel_ratio=0.5, sparsity=0.3, bits=4) for n in names
                        if n != "head"})
    student = apply(model, plan, x[:1])
    attn = student.encoder.layers[0].self_attn
    assert isinstance(attn.q_proj, LowRankPair) and isinstance(attn.out_proj, LowRankPair)
    # Heads stay consistent: 4 heads of 8 dims lose 4 each, q and k alike, and v with out_proj's inputs.
    assert attn.q_proj[1].out_features == attn.k_proj[1].out_features == 16
    assert attn.v_proj[1].out_features == attn.out_proj[0].in_features == 16
    assert student.encoder.layers[0].linear1[1].out_features == 32  # MLP hidden channels halved
    assert attn.out_proj.weight.shape == (32, 16)  # what TransformerEncoderLayer reads still answers
    with torch.no_grad():
        assert student.eval()(x).shape == (3, 10)
    student.train()
    student(x).sum().backward()  # fine-tunes through masks and fake quantization
    assert attn.q_proj[0].parametrizations.weight.original.grad.abs().sum() > 0


def test_head_pruning_removes_dims_that_carry_nothing_without_changing_outputs() -> None:
    torch.manual_seed(0)
    attn = ExplicitMultiheadAttention(16, 4, batch_first=True).eval()
    with torch.no_grad():  # the last q/k dim and the first v dim of every head are dead
        for h in range(4):
            for proj, d in ((attn.q_proj, 3), (attn.k_proj, 3), (attn.v_proj, 0)):
                proj.weight[4 * h + d] = 0
                proj.bias[4 * h + d] = 0
        x = torch.randn(2, 5, 16)
        before = attn(x, x, x, need_weights=False)[0]
        prune_head_dims(attn, qk_ratio=0.25, v_ratio=0.25)
        after = attn(x, x, x, need_weights=False)[0]
    assert attn.q_proj.out_features == attn.k_proj.out_features == attn.v_proj.out_features == 12
    assert attn.out_proj.in_features == 12
    assert torch.allclose(before, after, atol=1e-5)


def _window_attention(v2: bool) -> nn.Module:
    from torchvision.models.swin_transformer import ShiftedWindowAttention, ShiftedWindowAttentionV2

    cls = ShiftedWindowAttentionV2 if v2 else ShiftedWindowAttention
    torch.manual_seed(0)
    return cls(8, [2, 2], [1, 1], num_heads=2).eval()


@pytest.mark.parametrize("v2", [False, True])
def test_swin_attention_calls_its_projections_after_the_swap(v2: bool) -> None:
    holder = nn.Sequential(_window_attention(v2))
    ref = copy.deepcopy(holder)
    x = torch.randn(2, 5, 6, 8)  # padded to whole windows, shifted: every branch of the function
    assert not called_layers(holder, x) & {"0.qkv", "0.proj"}  # torchvision passes their weights to F.linear
    assert explicit_attention(holder) == ["0"]
    assert {"0.qkv", "0.proj"} <= called_layers(holder, x)
    with torch.no_grad():
        assert torch.allclose(holder(x), ref(x), atol=1e-6)
    student = apply(holder, Plan(layers={"0.qkv": LayerPlan(rank=0.25), "0.proj": LayerPlan(rank=0.25)}), x)
    assert isinstance(student[0].qkv, LowRankPair)
    with torch.no_grad():
        assert student(x).shape == x.shape


def test_low_rank_leaves_a_layer_that_is_only_read_by_attribute() -> None:
    holder = nn.Sequential(_window_attention(False))  # not swapped: qkv.weight goes to F.linear
    x = torch.randn(1, 4, 4, 8)
    student = apply(holder, Plan(layers={"0.qkv": LayerPlan(rank=0.25, bits=8)}), x)
    assert isinstance(student[0].qkv, nn.Linear)  # declined: the dense weight would be used anyway
    with torch.no_grad():
        assert student(x).shape == x.shape
