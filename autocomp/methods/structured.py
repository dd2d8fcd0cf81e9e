"""Structured (channel) pruning: output channels physically removed, dependents updated.

Torch-Pruning's dependency graph (Fang et al., DepGraph, CVPR 2023) finds every layer coupled
to a pruned channel: BatchNorm, the next conv/linear, residual additions that tie channels
across blocks, depthwise and grouped convs, concatenations. Channels are ranked by the L1 (or
L2) norm of their weights, summed over the coupled group. Output layers are never pruned, so
the model's output shape stays.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from torch import nn

from autocomp.errors import AutocompError
from autocomp.methods.registry import MethodContext, compute_layers, leaf_targets, register


@dataclass(frozen=True)
class ChannelPruneConfig:
    ratio: float  # fraction of output channels removed
    norm: int = 1  # 1 = L1 importance, 2 = L2

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio < 1.0:
            raise AutocompError(f"channel ratio must be in [0, 1), got {self.ratio}")
        if self.norm not in (1, 2):
            raise AutocompError(f"channel importance norm must be 1 or 2, got {self.norm}")


@register(ChannelPruneConfig)
def apply_channel_prune(
    model: nn.Module, configs: dict[str, ChannelPruneConfig], ctx: MethodContext
) -> None:
    import torch_pruning as tp  # deferred: heavy import

    ratios: dict[nn.Module, float] = {}
    norms = {c.norm for c in configs.values()}
    for name, config in configs.items():
        if config.ratio == 0 or name in ctx.output_layers:
            continue
        # After low rank, a layer is a pair of factors: prune the outputs of the last one.
        targets = list(leaf_targets(model, name))
        if targets:
            ratios[targets[-1][1]] = config.ratio
    if not ratios:
        return
    layers = compute_layers(model)
    ignored = [layers[n] for n in ctx.output_layers if n in layers]
    ignored += [m for m in layers.values() if m not in ratios]  # only planned layers lose channels
    logging.getLogger("torch_pruning").setLevel(logging.ERROR)
    pruner = tp.pruner.BasePruner(
        model,
        ctx.example_input,
        importance=tp.importance.GroupMagnitudeImportance(p=max(norms)),
        pruning_ratio=0.0,
        pruning_ratio_dict=ratios,
        ignored_layers=ignored,
        round_to=None,
    )
    pruner.step()
