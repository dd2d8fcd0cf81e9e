"""Tucker-2 decomposition of a convolution (Kim et al., ICLR 2016).

A ``Conv(cin, cout, k x k)`` becomes ``Conv(cin, r_in, 1x1) -> Conv(r_in, r_out, k x k) ->
Conv(r_out, cout, 1x1)``: the kernel ``W (cout, cin, kh, kw)`` is factorized along its two
channel modes by TensorLy's ``partial_tucker`` (HOOI from an SVD start, deterministic), into
``U_out (cout x r_out)``, a core ``(r_out, r_in, kh, kw)`` and ``U_in (cin x r_in)``. The
core conv takes the layer's stride, padding and dilation; the last 1x1 the layer's bias.

The ranks are fractions of the channel counts: ``r_in = round(rank_in * cin)``,
``r_out = round(rank_out * cout)`` (at least 1). A layer is left alone when the three convs
would not cut its MACs, and refused (left alone, reason recorded) when the factors are a poor
start (``autocomp.methods._chain``). In a search space it is a value of the ``rank`` knob:
``tucker2:0.5`` (both ranks) or ``tucker2:0.25:0.5`` (``rank_in:rank_out``).

Example::

    apply_tucker2(model, {"conv2": Tucker2Config(0.5, 0.5)}, ctx)   # conv2 -> Tucker2Conv
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from autocomp.errors import AutocompError
from autocomp.methods._chain import ConvChain, Outcome, checked, conv, decompose_layers, plain_conv
from autocomp.methods.registry import MethodContext, register


@dataclass(frozen=True)
class Tucker2Config:
    rank_in: float  # fraction of the input channels kept by the first 1x1, in (0, 1]
    rank_out: float  # fraction of the output channels the core produces, in (0, 1]
    WORD = "tucker2"

    def __post_init__(self) -> None:
        for name in ("rank_in", "rank_out"):
            x = getattr(self, name)
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not 0.0 < x <= 1.0:
                raise AutocompError(f"tucker2 {name} must be a fraction in (0, 1], got {x!r}")

    @classmethod
    def parse(cls, parts: list[float]) -> Tucker2Config:
        if len(parts) not in (1, 2):
            raise AutocompError("tucker2 takes one fraction (both ranks) or two (in:out), like tucker2:0.5")
        return cls(parts[0], parts[-1])

    @property
    def value(self) -> str:
        """The knob value that spells this config (``tucker2:0.5`` or ``tucker2:0.25:0.5``)."""
        if self.rank_in == self.rank_out:
            return f"tucker2:{self.rank_in:g}"
        return f"tucker2:{self.rank_in:g}:{self.rank_out:g}"

    @property
    def fraction(self) -> float:
        return (self.rank_in + self.rank_out) / 2

    def outcome(self, layer: nn.Module) -> Outcome | None:
        """The layer decomposed (or refused), None when this config leaves it as it is."""
        ranks = self.ranks(layer)
        return None if ranks is None else tucker2(layer, *ranks)

    def ranks(self, layer: nn.Module) -> tuple[int, int] | None:
        """``(r_in, r_out)``, or None when the layer cannot be decomposed or it would not cut MACs."""
        if plain_conv(layer):
            return None
        r_in = max(1, round(self.rank_in * layer.in_channels))
        r_out = max(1, round(self.rank_out * layer.out_channels))
        return (r_in, r_out) if macs(layer, r_in, r_out) < macs(layer) else None


def macs(layer: nn.Conv2d, r_in: int | None = None, r_out: int | None = None) -> int:
    """MACs per output pixel: of the layer, or of its Tucker-2 chain (the first 1x1 runs before the stride)."""
    (kh, kw), (sh, sw) = layer.kernel_size, layer.stride
    if r_in is None:
        return layer.in_channels * layer.out_channels * kh * kw
    return layer.in_channels * r_in * sh * sw + r_in * r_out * kh * kw + r_out * layer.out_channels


class Tucker2Conv(ConvChain):
    """1x1 -> core k x k -> 1x1; ``weight`` is the dense kernel the three compute."""

    @property
    def weight(self) -> torch.Tensor:
        first, core, last = self[0].weight[:, :, 0, 0], self[1].weight, self[2].weight[:, :, 0, 0]
        return torch.einsum("os,srhw,ri->oihw", last, core, first)


def tucker2(layer: nn.Conv2d, r_in: int, r_out: int) -> Outcome:
    """The layer's Tucker-2 chain from its trained kernel, checked (``_chain.checked``)."""

    def build() -> tuple[ConvChain, float]:
        import tensorly as tl
        from tensorly.decomposition import partial_tucker

        w = layer.weight.detach().cpu().double()
        with tl.backend_context("pytorch"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TensorLy warns when a rank equals the mode's size
            (core, (u_out, u_in)), _ = partial_tucker(w, rank=[r_out, r_in], modes=[0, 1], init="svd",
                                                      random_state=0)
        chain = Tucker2Conv(
            conv(layer.in_channels, r_in, (1, 1), u_in.T),
            conv(r_in, r_out, layer.kernel_size, core, stride=layer.stride, padding=layer.padding,
                 dilation=layer.dilation),
            conv(r_out, layer.out_channels, (1, 1), u_out, bias=layer.bias),
        )
        return chain, 1.0  # orthonormal factors: nothing cancels

    return checked(layer, ("tucker2", r_in, r_out), build)


@register(Tucker2Config)
def apply_tucker2(model: nn.Module, configs: dict[str, Tucker2Config], ctx: MethodContext) -> None:
    decompose_layers(model, configs, ctx)
