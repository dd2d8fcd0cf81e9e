"""Low-rank factorization by truncated SVD.

Linear ``W (out x in)`` becomes ``Linear(in, r) -> Linear(r, out)``. A k x k conv becomes a
spatial-SVD pair ``Conv(in, r, (kh, 1)) -> Conv(r, out, (1, kw))`` (Jaderberg et al. 2014);
a 1 x 1 conv becomes two 1 x 1 convs. A grouped conv is factorized group by group:
``Conv(in, r*g, (kh, 1), groups=g) -> Conv(r*g, out, (1, kw), groups=g)``. Depthwise convs are
left alone: at most a 3x3 becomes 3x1 + 1x3 (6 MACs instead of 9), and the channel-multiplier
pair it would need ties channels in a way structured pruning cannot follow.

The same ``rank`` knob also takes words that pick a tensor decomposition of a conv instead:
``tucker2:0.5`` (``autocomp.methods.tucker``) and ``cp:0.25`` (``autocomp.methods.cp``).

``rank`` is a fraction of the full rank of the matrix that is split (of one group's, for a
grouped conv). A layer is left alone when the factorized pair would not cut MACs. Cutting MACs
is not enough to be faster: a study also times each layer against its factorized pair on the
target runtime (``LowRankConfig.variant`` and ``autocomp.measure.layer_cost``) and drops the
ranks that do not pay from its space.

The pair replaces the layer under its name, as a ``LowRankPair`` (a Sequential of the two
factors) that keeps the layer's contract with code that reads it by attribute: ``weight`` (the
product of the factors), ``bias``, ``in_features``/``out_features`` or the conv's channel counts.
``nn.TransformerEncoderLayer`` reads ``self_attn.out_proj.weight`` and ``linear1.weight``
directly; a bare Sequential there crashed the forward. A layer the model never *calls* (its
weight is read by a function, as Swin's attention passes ``qkv.weight`` to ``F.linear``) is
left alone: the caller would use the dense product, so factorizing could not cut anything.

Example::

    apply_lowrank(model, {"fc1": LowRankConfig(0.25)}, ctx)  # fc1 -> LowRankPair(Linear, Linear)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from autocomp.errors import AutocompError
from autocomp.methods.cp import CPConfig
from autocomp.methods.registry import Knob, MethodContext, register
from autocomp.methods.tucker import Tucker2Config


@dataclass(frozen=True)
class LowRankConfig:
    rank: float  # fraction of full rank kept, in (0, 1]
    KNOB: ClassVar[Knob] = Knob("rank", noop=1.0, kind="float", low=0.01, high=1.0, stage=10,
                                title="rank kept", label="rank kept", short="r", colorscale="Greens_r", words=True)

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, (int, float)) or not 0.0 < self.rank <= 1.0:
            raise AutocompError(f"rank must be a fraction in (0, 1] or {WORDS_HINT}, got {self.rank!r}")

    @classmethod
    def from_value(cls, value: Any, plan: Any = None) -> LowRankConfig | Tucker2Config | CPConfig:
        """A number is SVD's rank; a word picks a tensor decomposition (``tucker2:0.5``, ``cp:0.25``)."""
        return decomposition(value) if isinstance(value, str) else cls(value)

    @property
    def value(self) -> float:
        return self.rank

    @property
    def fraction(self) -> float:
        return self.rank

    @classmethod
    def variant(cls, layer: nn.Module, value: float | str) -> nn.Module | None:
        """``layer`` as this knob's value leaves it (None when it stays as it is).

        What ``autocomp.measure.layer_cost`` times against the original layer.
        """
        if isinstance(value, str):
            outcome = decomposition(value).outcome(layer)
            return None if outcome is None else outcome.chain
        if value >= 1.0 or not isinstance(layer, (nn.Linear, nn.Conv2d)):
            return None
        rank = kept_rank(layer, value)
        return factorize(layer, rank) if factorizable(layer, rank) else None


WORDS_HINT = "tucker2:F[:F] or cp:F (F a fraction in (0, 1])"


def decomposition(word: str) -> Tucker2Config | CPConfig:
    """The config a word of the rank knob spells: ``tucker2:0.5``, ``tucker2:0.25:0.5``, ``cp:0.25``."""
    method, *parts = word.strip().split(":")
    kinds = {c.WORD: c for c in (Tucker2Config, CPConfig)}
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        numbers = []
    if method not in kinds or not numbers:
        raise AutocompError(f"rank must be a fraction in (0, 1] or {WORDS_HINT}, got {word!r}")
    return kinds[method].parse(numbers)


def full_rank(layer: nn.Module) -> int:
    """Rank of the matrix the factorization splits (one group's, for a grouped conv)."""
    if isinstance(layer, nn.Linear):
        return min(layer.in_features, layer.out_features)
    kh, kw = layer.kernel_size
    g = layer.groups
    return min(layer.in_channels // g * kh, layer.out_channels // g * kw)


def kept_rank(layer: nn.Module, fraction: float) -> int:
    return max(1, int(round(fraction * full_rank(layer))))


def macs_per_output(layer: nn.Module, rank: int | None = None) -> int:
    """MACs per output pixel (per output vector for Linear): whole layer, or factorized at ``rank``."""
    if isinstance(layer, nn.Linear):
        if rank is None:
            return layer.in_features * layer.out_features
        return rank * (layer.in_features + layer.out_features)
    kh, kw = layer.kernel_size
    cin, cout, g = layer.in_channels, layer.out_channels, layer.groups
    if rank is None:
        return cin // g * cout * kh * kw
    # The first factor runs before the stride on w is taken (unless its kernel is 1 wide too).
    w_stride = layer.stride[1] if kw > 1 else 1
    return rank * cin * kh * w_stride + cout * rank * kw


def factorizable(layer: nn.Module, rank: int) -> bool:
    """True when the factorized pair costs fewer MACs than the layer."""
    if isinstance(layer, nn.Linear):
        return macs_per_output(layer, rank) < macs_per_output(layer)
    if not isinstance(layer, nn.Conv2d) or layer.padding_mode != "zeros":
        return False
    if layer.groups > 1 and layer.groups == layer.in_channels:  # depthwise: see the module doc
        return False
    if isinstance(layer.padding, str):  # "same"/"valid" padding cannot be split per axis
        return False
    return macs_per_output(layer, rank) < macs_per_output(layer)


def _factorize_linear(layer: nn.Linear, rank: int) -> nn.Sequential:
    u, s, vh = torch.linalg.svd(layer.weight.detach(), full_matrices=False)
    root = s[:rank].sqrt()
    first = nn.Linear(layer.in_features, rank, bias=False)
    second = nn.Linear(rank, layer.out_features, bias=layer.bias is not None)
    first.weight.copy_(root[:, None] * vh[:rank])
    second.weight.copy_(u[:, :rank] * root[None, :])
    return nn.Sequential(first, second)


def _factorize_conv(layer: nn.Conv2d, rank: int) -> nn.Sequential:
    cout, cin_g, kh, kw = layer.weight.shape
    g = layer.groups
    cout_g = cout // g
    # Per group, W[o, i, y, x] -> M[(i, y), (o, x)]; M = A B splits the kernel into (kh,1), (1,kw).
    w = layer.weight.detach().reshape(g, cout_g, cin_g, kh, kw)
    mat = w.permute(0, 2, 3, 1, 4).reshape(g, cin_g * kh, cout_g * kw)
    u, s, vh = torch.linalg.svd(mat, full_matrices=False)
    root = s[:, :rank].sqrt()
    a = u[:, :, :rank] * root[:, None, :]  # (g, cin_g*kh, r)
    b = root[:, :, None] * vh[:, :rank]  # (g, r, cout_g*kw)
    a = a.reshape(g, cin_g, kh, rank).permute(0, 3, 1, 2).reshape(g * rank, cin_g, kh, 1)
    b = b.reshape(g, rank, cout_g, kw).permute(0, 2, 1, 3).reshape(cout, rank, 1, kw)
    (sh, sw), (ph, pw), (dh, dw) = layer.stride, layer.padding, layer.dilation
    if kw == 1:  # nothing left to do on w after the first factor: it takes the whole stride/padding
        first_w, second_w = (sw, pw, 1), (1, 0, 1)
    else:
        first_w, second_w = (1, 0, 1), (sw, pw, dw)
    first = nn.Conv2d(
        layer.in_channels, g * rank, (kh, 1), stride=(sh, first_w[0]), padding=(ph, first_w[1]),
        dilation=(dh, first_w[2]), groups=g, bias=False,
    )
    second = nn.Conv2d(
        g * rank, cout, (1, kw), stride=(1, second_w[0]), padding=(0, second_w[1]),
        dilation=(1, second_w[2]), groups=g, bias=layer.bias is not None,
    )
    first.weight.copy_(a)
    second.weight.copy_(b)
    return nn.Sequential(first, second)


class LowRankPair(nn.Sequential):
    """Two factors in sequence that still answer for the layer they replace.

    ``weight`` is the dense product of the factors (what a caller reading ``layer.weight``
    gets, e.g. ``nn.TransformerEncoderLayer``'s fast-path checks), ``bias`` the second
    factor's; the shape attributes are the original layer's.
    """

    @property
    def weight(self) -> torch.Tensor:
        first, second = self[0].weight, self[1].weight
        if isinstance(self[0], nn.Linear):
            return second @ first
        # Per group: W[o, i, y, x] = sum_r B[o, r, 0, x] * A[r, i, y, 0].
        g = self[0].groups
        a = first.reshape(g, first.shape[0] // g, first.shape[1], first.shape[2])  # (g, r, cin_g, kh)
        b = second.reshape(g, second.shape[0] // g, second.shape[1], second.shape[3])  # (g, cout_g, r, kw)
        return torch.einsum("gori,grcy->gocyi", b, a).reshape(second.shape[0], first.shape[1], first.shape[2],
                                                                second.shape[3])

    # The layer's own attributes, read from the factor that holds each.
    bias = property(lambda self: self[1].bias)
    in_features = property(lambda self: self[0].in_features)
    out_features = property(lambda self: self[1].out_features)
    in_channels = property(lambda self: self[0].in_channels)
    out_channels = property(lambda self: self[1].out_channels)


def factorize(layer: nn.Module, rank: int) -> LowRankPair:
    """The factorized pair, with the layer's bias on the second factor."""
    with torch.no_grad():
        pair = _factorize_linear(layer, rank) if isinstance(layer, nn.Linear) else _factorize_conv(layer, rank)
        if layer.bias is not None:
            pair[1].bias.copy_(layer.bias.detach())
    return LowRankPair(*pair).to(layer.weight.device, layer.weight.dtype)


@register(LowRankConfig)
def apply_lowrank(model: nn.Module, configs: dict[str, LowRankConfig], ctx: MethodContext) -> None:
    for name, config in configs.items():
        if config.rank >= 1.0:
            continue
        layer = model.get_submodule(name)
        if not isinstance(layer, (nn.Linear, nn.Conv2d)):
            continue
        if ctx.called_layers is not None and name not in ctx.called_layers:
            continue  # read by attribute only (see the module doc): a pair would not be run
        rank = kept_rank(layer, config.rank)
        if not factorizable(layer, rank):
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, factorize(layer, rank))
