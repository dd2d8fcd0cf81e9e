"""CP decomposition of a convolution (Lebedev et al., ICLR 2015).

A ``Conv(cin, cout, kh x kw)`` becomes ``Conv(cin, R, 1x1) -> depthwise Conv(R, kh x 1) ->
depthwise Conv(R, 1 x kw) -> Conv(R, cout, 1x1)``: the kernel ``W (cout, cin, kh, kw)`` is the
sum of ``R`` rank-one tensors ``a_r (x) b_r (x) c_r (x) d_r``, found by TensorLy's ``parafac``
(ALS from an SVD start, ``random_state=0``: deterministic). The depthwise pair takes the
layer's stride, padding and dilation, one axis each; the last 1x1 the layer's bias. Each
component's scale is spread evenly over its four factors.

**The rank's bound.** ``rank`` is a fraction of ``R_max = cin * cout * kh * kw / (cin + cout +
kh + kw)``, the rank at which the four convs cost the layer's MACs (stride aside), so ``cp:0.25``
keeps about a quarter of the layer's MACs, whatever its shape. ``R`` may exceed the channel
counts (a CP rank can). A layer is left alone when the chain would not cut MACs, and refused
(left alone, reason recorded) when ALS gives a poor or degenerate start
(``autocomp.methods._chain``); ``cp:1`` leaves every layer alone. In a search space it is a
value of the ``rank`` knob: ``cp:0.25``.

Example::

    apply_cp(model, {"conv2": CPConfig(0.25)}, ctx)   # conv2 -> CPConv
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from autocomp.errors import AutocompError
from autocomp.methods._chain import ConvChain, Outcome, checked, conv, decompose_layers, plain_conv
from autocomp.methods.registry import MethodContext, register

ALS_ITERATIONS = 50  # fine-tune does the rest; 25 sweeps took 6.4 s on a 512x512 3x3 conv at R = 572 here
ALS_TOLERANCE = 1e-5


@dataclass(frozen=True)
class CPConfig:
    rank: float  # fraction of R_max (see the module doc), in (0, 1]
    WORD = "cp"

    def __post_init__(self) -> None:
        x = self.rank
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not 0.0 < x <= 1.0:
            raise AutocompError(f"cp rank must be a fraction in (0, 1], got {x!r}")

    @classmethod
    def parse(cls, parts: list[float]) -> CPConfig:
        if len(parts) != 1:
            raise AutocompError("cp takes one fraction, like cp:0.25")
        return cls(parts[0])

    @property
    def value(self) -> str:
        return f"cp:{self.rank:g}"

    @property
    def fraction(self) -> float:
        return self.rank

    def outcome(self, layer: nn.Module) -> Outcome | None:
        """The layer decomposed (or refused), None when this config leaves it as it is."""
        rank = self.kept(layer)
        return None if rank is None else cp(layer, rank)

    def kept(self, layer: nn.Module) -> int | None:
        """``R``, or None when the layer cannot be decomposed or the chain would not cut MACs."""
        if plain_conv(layer) or self.rank >= 1.0:
            return None
        rank = max(1, round(self.rank * max_rank(layer)))
        return rank if macs(layer, rank) < macs(layer) else None


def max_rank(layer: nn.Conv2d) -> float:
    """``R_max``: the rank at which the chain costs the layer's MACs (stride aside)."""
    kh, kw = layer.kernel_size
    cin, cout = layer.in_channels, layer.out_channels
    return cin * cout * kh * kw / (cin + cout + kh + kw)


def macs(layer: nn.Conv2d, rank: int | None = None) -> float:
    """MACs per output pixel: of the layer, or of its CP chain (the 1x1 and the kh x 1 run before the w stride)."""
    (kh, kw), (sh, sw) = layer.kernel_size, layer.stride
    if rank is None:
        return layer.in_channels * layer.out_channels * kh * kw
    return rank * (layer.in_channels * sh * sw + kh * sw + kw + layer.out_channels)


class CPConv(ConvChain):
    """1x1 -> depthwise kh x 1 -> depthwise 1 x kw -> 1x1; ``weight`` is the dense kernel they compute."""

    @property
    def weight(self) -> torch.Tensor:
        first, down, across, last = (self[0].weight[:, :, 0, 0], self[1].weight[:, 0, :, 0],
                                     self[2].weight[:, 0, 0, :], self[3].weight[:, :, 0, 0])
        return torch.einsum("or,ri,rh,rw->oihw", last, first, down, across)


def cp(layer: nn.Conv2d, rank: int) -> Outcome:
    """The layer's CP chain from its trained kernel, checked (``_chain.checked``)."""

    def build() -> tuple[ConvChain, float]:
        import tensorly as tl
        from tensorly.decomposition import parafac

        w = layer.weight.detach().cpu().double()
        # TensorLy's default MTTKRP forms the Khatri-Rao product of the other three factors: with
        # R above the channel counts that is cin*cout*kw rows (141 s for 25 sweeps of a 256x256
        # conv here); its einsum backend contracts one factor at a time (opt_einsum's path): 1.0 s.
        with tl.backend_context("pytorch"), tl.tenalg.backend_context("einsum"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TensorLy warns when the SVD start has fewer vectors than R
            weights, (a, b, c, d) = parafac(w, rank=rank, init="svd", random_state=0, n_iter_max=ALS_ITERATIONS,
                                            tol=ALS_TOLERANCE)
        # Spread each component's scale evenly over its four factors (each column at norm s**(1/4)).
        norms = [f.norm(dim=0).clamp_min(1e-30) for f in (a, b, c, d)]
        scale = weights.abs() * torch.stack(norms).prod(0)
        root = scale ** 0.25
        a, b, c, d = (f / n * root for f, n in zip((a, b, c, d), norms, strict=True))
        a = a * torch.sign(weights)
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = layer.kernel_size, layer.stride, layer.padding, layer.dilation
        chain = CPConv(
            conv(layer.in_channels, rank, (1, 1), b.T),
            conv(rank, rank, (kh, 1), c.T, stride=(sh, 1), padding=(ph, 0), dilation=(dh, 1), groups=rank),
            conv(rank, rank, (1, kw), d.T, stride=(1, sw), padding=(0, pw), dilation=(1, dw), groups=rank),
            conv(rank, layer.out_channels, (1, 1), a, bias=layer.bias),
        )
        cancellation = float(torch.linalg.vector_norm(scale) / torch.linalg.vector_norm(w).clamp_min(1e-30))
        return chain, cancellation

    return checked(layer, ("cp", rank), build)


@register(CPConfig)
def apply_cp(model: nn.Module, configs: dict[str, CPConfig], ctx: MethodContext) -> None:
    decompose_layers(model, configs, ctx)
