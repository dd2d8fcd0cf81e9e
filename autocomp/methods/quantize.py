"""Weight quantization: symmetric per-output-channel, 2-8 bits, with a straight-through estimator.

During fine-tune (``qat``) the weights pass through fake quantization so the network learns
the grid it will be exported on. At export every quantized weight is exactly ``k * scale``
with integer ``|k| <= 2**(bits-1) - 1``; the artifact stores ``k`` packed in ``bits`` bits and
activations are calibrated to int8 (static QDQ) or quantized at run time (``dynamic``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from autocomp.errors import AutocompError
from autocomp.methods.registry import MethodContext, leaf_targets, register


@dataclass(frozen=True)
class QuantConfig:
    bits: int
    mode: str = "qat"  # qat | ptq | dynamic

    def __post_init__(self) -> None:
        if not (isinstance(self.bits, int) and 2 <= self.bits <= 8):
            raise AutocompError(f"bits must be an integer from 2 to 8, got {self.bits!r}")
        if self.mode not in ("qat", "ptq", "dynamic"):
            raise AutocompError(f"quant mode must be qat, ptq or dynamic, got {self.mode!r}")


def qmax(bits: int) -> int:
    return 2 ** (bits - 1) - 1


def channel_scale(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-output-channel scale so that max |w| of each channel maps to ``qmax(bits)``."""
    flat = weight.detach().reshape(weight.shape[0], -1)
    scale = flat.abs().amax(dim=1).clamp_min(1e-12) / qmax(bits)
    return scale.reshape(-1, *([1] * (weight.dim() - 1)))


def quantize_weight(weight: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer codes and per-channel scales; ``codes * scale`` is the dequantized weight."""
    scale = channel_scale(weight, bits)
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
    """Parametrization: round to the b-bit grid on the forward, identity gradient backward."""

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
            layer.autocomp_bits = config.bits


def enable_all_fake_quant(model: nn.Module) -> None:
    """Round every quantized weight from now on (ptq/dynamic: just before export)."""
    for module in model.modules():
        if isinstance(module, FakeQuant):
            module.enabled = True
