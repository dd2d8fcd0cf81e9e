"""Unstructured magnitude pruning with masks that stay fixed through fine-tuning."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn.utils import parametrize

from autocomp.errors import AutocompError
from autocomp.methods.registry import Knob, MethodContext, register
from autocomp.models.layers import leaf_targets


@dataclass(frozen=True)
class MagnitudePruneConfig:
    """Zero the ``sparsity`` fraction of a layer's weights with the smallest magnitude."""

    sparsity: float
    KNOB: ClassVar[Knob] = Knob("sparsity", noop=0.0, kind="float", low=0.0, high=0.98, stage=30,
                                title="sparsity", label="sparse", short="sp", colorscale="Oranges")

    def __post_init__(self) -> None:
        if not 0.0 <= self.sparsity < 1.0:
            raise AutocompError(f"sparsity must be in [0, 1), got {self.sparsity}")

    @classmethod
    def from_value(cls, value: Any, plan: Any = None) -> MagnitudePruneConfig:
        return cls(value)


class WeightMask(nn.Module):
    """Parametrization ``w -> w * mask``; the mask is a buffer, so it never trains."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


def magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """A 0/1 mask with exactly ``round(sparsity * numel)`` zeros at the smallest |w|."""
    n_zero = int(round(sparsity * weight.numel()))
    mask = torch.ones_like(weight)
    if n_zero:
        # argsort (stable) rather than a threshold, so ties cannot change the count.
        order = torch.argsort(weight.detach().abs().flatten(), stable=True)
        mask.view(-1)[order[:n_zero]] = 0.0
    return mask


@register(MagnitudePruneConfig)
def apply_magnitude_prune(
    model: nn.Module, configs: dict[str, MagnitudePruneConfig], ctx: MethodContext
) -> None:
    for name, config in configs.items():
        if config.sparsity == 0:
            continue
        for _, layer in leaf_targets(model, name):
            mask = magnitude_mask(layer.weight, config.sparsity)
            parametrize.register_parametrization(layer, "weight", WeightMask(mask))
