"""Weight quantization: symmetric per-output-channel, 2-8 bits, with a straight-through estimator.

During fine-tune (``qat``) the weights pass through fake quantization so the network learns
the grid it will be exported on. At export every quantized weight is exactly ``k * scale``
with integer ``|k| <= 2**(bits-1) - 1``; the artifact stores ``k`` packed in ``bits`` bits and
activations are calibrated to int8 (static QDQ) or quantized at run time (``dynamic``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn.utils import parametrize

from autocomp.errors import AutocompError
from autocomp.methods.registry import Knob, MethodContext, register
from autocomp.models.layers import leaf_targets

QUANT_MODES = ("qat", "ptq", "dynamic")
MODE_WORDS = "qat, ptq or dynamic"


def check_mode(mode: Any) -> str:
    if mode not in QUANT_MODES:
        raise AutocompError(f"quant_mode must be {MODE_WORDS}, got {mode!r}")
    return mode


@dataclass(frozen=True)
class QuantConfig:
    bits: int
    mode: str = "qat"  # one of QUANT_MODES
    KNOB: ClassVar[Knob] = Knob("bits", noop=None, kind="bits", low=2, high=8, stage=40,
                                title="weight bits (32 = float)", short="b", colorscale="Blues_r", shown_noop=32,
                                shown_range=(2, 32))

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not (isinstance(self.bits, int) and 2 <= self.bits <= 8):
            raise AutocompError(f"bits must be an integer from 2 to 8 or null, got {self.bits!r}")
        check_mode(self.mode)

    @classmethod
    def from_value(cls, value: Any, plan: Any = None) -> QuantConfig:
        return cls(value, plan.quant_mode if plan is not None else "qat")


def qmax(bits: int) -> int:
    """Largest code of the symmetric ``bits``-bit grid: codes lie in ``[-qmax, qmax]``."""
    return 2 ** (bits - 1) - 1


def channel_scale(weight: torch.Tensor, bits: int, axis: int = 0) -> torch.Tensor:
    """Per-channel scale (channels along ``axis``) so that each channel's max |w| maps to ``qmax(bits)``."""
    dims = [d for d in range(weight.dim()) if d != axis % max(weight.dim(), 1)]
    amax = weight.detach().abs().amax(dim=dims, keepdim=True) if dims else weight.detach().abs()
    return amax.clamp_min(1e-12) / qmax(bits)


def quantize_weight(weight: torch.Tensor, bits: int, axis: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The grid every quantized weight lives on, in training and in the artifact alike.

    Integer codes in ``[-qmax, qmax]`` and per-channel scales (broadcastable, channels along
    ``axis``); ``codes * scale`` is the dequantized weight.
    """
    scale = channel_scale(weight, bits, axis)
    codes = torch.clamp(torch.round(weight / scale), -qmax(bits), qmax(bits))
    return codes, scale


class _RoundSTE(torch.autograd.Function):
    """``clamp(round(x), -q, q)`` forward, identity backward.

    The clamp lives inside the estimator on purpose: ``torch.clamp`` passes no gradient at its
    bounds, and after rounding every weight that lands on the grid's end sits exactly there (at
    2 bits, most of them), so a clamp outside would freeze those weights. The scale comes from
    each channel's max, so nothing lies beyond the bounds and the identity is the right slope.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, q: int) -> torch.Tensor:  # noqa: ANN001
        return torch.clamp(torch.round(x), -q, q)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ANN001
        return grad, None


class FakeQuant(nn.Module):
    """Parametrization: round to the b-bit grid on the forward, identity gradient backward.

    It is also where a layer's bit width lives until export: ``bake`` collects it from here.
    """

    def __init__(self, bits: int, enabled: bool = True) -> None:
        super().__init__()
        self.bits = bits
        self.enabled = enabled

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return weight
        scale = channel_scale(weight, self.bits)
        return _RoundSTE.apply(weight / scale, qmax(self.bits)) * scale


@register(QuantConfig)
def apply_quant(model: nn.Module, configs: dict[str, QuantConfig], ctx: MethodContext) -> None:
    for name, config in configs.items():
        for _, layer in leaf_targets(model, name):
            # ptq/dynamic train in float and round at export; the parametrization is added
            # disabled so export still finds the bit width on the module.
            fq = FakeQuant(config.bits, enabled=config.mode == "qat")
            parametrize.register_parametrization(layer, "weight", fq)


def enable_all_fake_quant(model: nn.Module) -> None:
    """Round every quantized weight from now on (ptq/dynamic: just before export)."""
    for module in model.modules():
        if isinstance(module, FakeQuant):
            module.enabled = True
