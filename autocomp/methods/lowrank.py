"""Low-rank factorization by truncated SVD.

Linear ``W (out x in)`` becomes ``Linear(in, r) -> Linear(r, out)``. A k x k conv becomes a
spatial-SVD pair ``Conv(in, r, (kh, 1)) -> Conv(r, out, (1, kw))`` (Jaderberg et al. 2014);
a 1 x 1 conv becomes two 1 x 1 convs. A layer is left alone when the factorized pair would not
cut MACs, and grouped/depthwise convs are never factorized.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from autocomp.errors import AutocompError
from autocomp.methods.registry import MethodContext, register


@dataclass(frozen=True)
class LowRankConfig:
    rank: float  # fraction of full rank kept, in (0, 1]

    def __post_init__(self) -> None:
        if not 0.0 < self.rank <= 1.0:
            raise AutocompError(f"rank must be in (0, 1], got {self.rank}")


def full_rank(layer: nn.Module) -> int:
    if isinstance(layer, nn.Linear):
        return min(layer.in_features, layer.out_features)
    kh, kw = layer.kernel_size
    return min(layer.in_channels * kh, layer.out_channels * kw)


def kept_rank(layer: nn.Module, fraction: float) -> int:
    return max(1, int(round(fraction * full_rank(layer))))


def factorizable(layer: nn.Module, rank: int) -> bool:
    """True when the factorized pair has fewer weights (hence MACs per output pixel)."""
    if isinstance(layer, nn.Linear):
        return rank * (layer.in_features + layer.out_features) < layer.in_features * layer.out_features
    if not isinstance(layer, nn.Conv2d) or layer.groups != 1 or layer.padding_mode != "zeros":
        return False
    if isinstance(layer.padding, str):  # "same"/"valid" padding cannot be split per axis
        return False
    kh, kw = layer.kernel_size
    cin, cout = layer.in_channels, layer.out_channels
    # MACs per output pixel; the first factor runs at full width before the stride on w.
    full = cin * cout * kh * kw
    factored = rank * cin * kh * layer.stride[1] + rank * cout * kw
    return factored < full


def factorize(layer: nn.Module, rank: int) -> nn.Sequential:
    with torch.no_grad():
        if isinstance(layer, nn.Linear):
            u, s, vh = torch.linalg.svd(layer.weight.detach(), full_matrices=False)
            root = s[:rank].sqrt()
            first = nn.Linear(layer.in_features, rank, bias=False)
            second = nn.Linear(rank, layer.out_features, bias=layer.bias is not None)
            first.weight.copy_(root[:, None] * vh[:rank])
            second.weight.copy_(u[:, :rank] * root[None, :])
        else:
            cout, cin, kh, kw = layer.weight.shape
            # W[o, i, y, x] -> M[(i, y), (o, x)]; M = A B splits the kernel into (kh,1) then (1,kw).
            mat = layer.weight.detach().permute(1, 2, 0, 3).reshape(cin * kh, cout * kw)
            u, s, vh = torch.linalg.svd(mat, full_matrices=False)
            root = s[:rank].sqrt()
            a = (u[:, :rank] * root).reshape(cin, kh, rank).permute(2, 0, 1).unsqueeze(-1)
            b = (root[:, None] * vh[:rank]).reshape(rank, cout, kw).permute(1, 0, 2).unsqueeze(2)
            first = nn.Conv2d(
                cin, rank, (kh, 1), stride=(layer.stride[0], 1),
                padding=(layer.padding[0], 0), dilation=(layer.dilation[0], 1), bias=False,
            )
            second = nn.Conv2d(
                rank, cout, (1, kw), stride=(1, layer.stride[1]),
                padding=(0, layer.padding[1]), dilation=(1, layer.dilation[1]),
                bias=layer.bias is not None,
            )
            first.weight.copy_(a)
            second.weight.copy_(b)
        if layer.bias is not None:
            second.bias.copy_(layer.bias.detach())
    return nn.Sequential(first, second)


@register(LowRankConfig)
def apply_lowrank(model: nn.Module, configs: dict[str, LowRankConfig], ctx: MethodContext) -> None:
    for name, config in configs.items():
        if config.rank >= 1.0:
            continue
        layer = model.get_submodule(name)
        if not isinstance(layer, (nn.Linear, nn.Conv2d)):
            continue
        rank = kept_rank(layer, config.rank)
        if not factorizable(layer, rank):
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, factorize(layer, rank))
