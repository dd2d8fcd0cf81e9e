"""Unstructured magnitude pruning: masks fixed through the fine-tune, or ramped up along it.

``ramp_masks`` is Zhu & Gupta's gradual pruning (2017): each layer's sparsity rises from 0 to
its target along a cubic over the first part of the fine-tune, re-pruning by magnitude as the
weights move, so the network adapts while it loses weights instead of after.
"""

from __future__ import annotations

from collections.abc import Callable
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


RAMP_UPDATES = 20  # mask updates along a ramp


def ramp_masks(model: nn.Module, share: float, steps: int) -> Callable[[int], None]:
    """Ramp ``model``'s magnitude masks over the first ``share`` of ``steps`` optimizer steps:
    the masks are emptied now (step 0), and ``ramp(step)`` after each step sets each mask to its
    target sparsity times ``1 - (1 - step / end) ** 3``, ``RAMP_UPDATES`` times along it; from
    ``end`` on every mask holds exactly as many zeros as ``apply_magnitude_prune`` gave it.
    Weights a mask has zeroed count as 0, so a mask only grows. Without a mask or a share, the
    masks stay as they are and ``ramp`` does nothing.

    Example::

        ramp = ramp_masks(student, 0.6, 600)   # every mask all ones now; full sparsity from step 360
        ramp(1)                                 # after the first optimizer step
    """
    held = [(mask, plist) for module in model.modules()
            for plist in [getattr(getattr(module, "parametrizations", None), "weight", None)] if plist is not None
            for mask in plist if isinstance(mask, WeightMask)]
    if not held or share <= 0 or steps <= 0:
        return lambda step: None
    zeros = {mask: int((mask.mask == 0).sum()) for mask, _ in held}
    end = max(1, int(share * steps))
    every = max(1, end // RAMP_UPDATES)

    def masked_input(mask: WeightMask, plist: Any) -> torch.Tensor:
        weight = plist.original
        for p in plist:  # the parametrizations before the mask (none in the registered order)
            if p is mask:
                return weight
            weight = p(weight)
        return weight

    def ramp(step: int) -> None:
        if step > end or (step % every and step != end):
            return
        done = 1.0 - (1.0 - step / end) ** 3
        with torch.no_grad():
            for mask, plist in held:
                n_zero = zeros[mask] if step == end else int(zeros[mask] * done)
                mask.mask.copy_(magnitude_mask(masked_input(mask, plist) * mask.mask, n_zero / mask.mask.numel()))

    ramp(0)
    return ramp
