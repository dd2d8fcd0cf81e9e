"""Structured (channel) pruning: output channels physically removed, dependents updated.

Torch-Pruning's dependency graph (Fang et al., DepGraph, CVPR 2023) finds every layer coupled
to a pruned channel: BatchNorm, the next conv/linear, residual additions that tie channels
across blocks, depthwise and grouped convs, squeeze-excitation scales, concatenations. Channels
are ranked by the L1 (or L2) norm of their weights, summed over the coupled group.

Channels tied together form one group and are pruned by one ratio: the mean of the ratios the
group's layers ask for. A layer the plan leaves alone asks for 0; a depthwise conv does not ask
(its channels are its input's), so ``conv -> depthwise`` is pruned by the conv's ratio. A group
that holds an output layer is never pruned, so the model's output shape stays. A group that
runs through a reshape the graph cannot map (the channel shuffle of ShuffleNet) is left alone
rather than pruned wrongly; the layers inside each block are still pruned.

Example::

    apply_channel_prune(model, {"layer1.0.conv1": ChannelPruneConfig(0.5)}, ctx)
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from autocomp.errors import AutocompError, TrialFailed
from autocomp.methods.registry import Knob, MethodContext, register
from autocomp.models.adapters.attention import ExplicitMultiheadAttention, prune_head_dims
from autocomp.models.layers import COMPUTE_TYPES, leaf_targets


@dataclass(frozen=True)
class ChannelPruneConfig:
    """Remove ``round(ratio * channels)`` output channels (per channel group of a grouped conv).

    Tied channels share one ratio: the mean over the layers of their group (see the module doc).
    """

    ratio: float  # fraction of output channels removed
    norm: int = 1  # 1 = L1 importance, 2 = L2
    # Never offered on an output layer: its channels are the model's classes.
    KNOB: ClassVar[Knob] = Knob("channel_ratio", noop=0.0, kind="float", low=0.0, high=0.9, stage=20,
                                on_output_layers=False, title="channels removed", label="channels cut", short="ch",
                                colorscale="Purples")

    def __post_init__(self) -> None:
        if not 0.0 <= self.ratio < 1.0:
            raise AutocompError(f"channel_ratio must be in [0, 1), got {self.ratio}")
        if self.norm not in (1, 2):
            raise AutocompError(f"channel importance norm must be 1 or 2, got {self.norm}")

    @classmethod
    def from_value(cls, value: Any, plan: Any = None) -> ChannelPruneConfig:
        return cls(value)

    # Timed alone, a cut layer shows only its own saving: its consumers read fewer channels too.
    # ``autocomp.study.costs`` therefore drops a cut only when the layer alone is measurably slower.
    VARIANT_PARTIAL: ClassVar[bool] = True

    @classmethod
    def variant(cls, layer: nn.Module, value: float) -> nn.Module | None:
        """A layer of the same shape with ``round(value * channels)`` fewer outputs (per group), for
        ``autocomp.measure.layer_cost`` to time against the original; None when nothing is cut
        (depthwise convs follow their input, not their own ratio). Weights are random: timing only."""
        if isinstance(layer, nn.Linear):
            cut = min(int(round(value * layer.out_features)), layer.out_features - 1)
            return nn.Linear(layer.in_features, layer.out_features - cut, bias=layer.bias is not None) if cut else None
        if not isinstance(layer, nn.Conv2d) or is_depthwise(layer):
            return None
        g = layer.groups
        per_group = layer.out_channels // g
        cut = min(int(round(value * per_group)), per_group - 1)
        if not cut:
            return None
        return nn.Conv2d(layer.in_channels, layer.out_channels - g * cut, layer.kernel_size, layer.stride,
                         layer.padding, layer.dilation, g, layer.bias is not None, layer.padding_mode)


def is_depthwise(layer: nn.Module) -> bool:
    return isinstance(layer, nn.Conv2d) and layer.groups > 1 and layer.groups == layer.in_channels


def _stop(idxs: list) -> list:
    return []


def _is_flatten(node, depth: int = 0, features: int | None = None) -> bool:  # noqa: ANN001
    """A reshape Torch-Pruning maps right: 2-D in, or 4-D in and a Linear right after it, or
    3-D ``(batch, tokens, C)`` in and a Linear over those same ``C`` features right after it
    (how ``F.linear`` runs on a sequence: the token axes merge, the channels stay put)."""
    from torch_pruning import ops

    grad_fn = node.grad_fn
    sizes = getattr(grad_fn, "_saved_self_sym_sizes", getattr(grad_fn, "_saved_self_sizes", None))
    rank = len(sizes) if sizes is not None else None
    if depth == 0 and rank == 2:
        return True
    if depth == 0 and rank == 3:
        features = int(sizes[-1])
    elif depth == 0 and rank != 4:
        return False
    return bool(node.outputs) and depth < 4 and all(
        (out.type == ops.OPTYPE.LINEAR and (features is None or out.module.in_features == features))
        or (out.type == ops.OPTYPE.ELEMENTWISE and _is_flatten(out, depth + 1, features))
        for out in node.outputs
    )


@contextlib.contextmanager
def _tolerant_reshapes() -> Iterator[set]:
    """Collect reshape nodes whose channel mapping Torch-Pruning cannot infer, and cut them off.

    Torch-Pruning has no extension point for reshapes, so its module function
    ``index_mapping.update_reshape_index_mapping`` is replaced for the duration of the block:
    the version is pinned in ``pyproject.toml`` and a test checks the replacement (and its
    removal) against it. A channel shuffle (``view(b, g, c/g, h, w)``, transpose, ``view(b, c, h, w)``) permutes
    channels; Torch-Pruning divides by zero on it, or maps indices wrongly. Such a node is
    recorded, indices stop propagating past it, and every group that reaches it is left alone.
    """
    from torch_pruning.dependency import index_mapping

    original = index_mapping.update_reshape_index_mapping
    unsafe: set = set()

    def guarded(graph, node) -> None:  # noqa: ANN001
        if node not in unsafe and _is_flatten(node):
            try:
                original(graph, node)
                return
            except ZeroDivisionError:
                pass
        unsafe.add(node)
        for dep in node.dependencies:  # groups reach the node, then go no further
            dep.index_mapping[0] = _stop

    index_mapping.update_reshape_index_mapping = guarded
    try:
        yield unsafe
    finally:
        index_mapping.update_reshape_index_mapping = original


def _channel_groups(graph, group) -> int:  # noqa: ANN001
    """How many equal channel groups a coupled group must keep (grouped convs, GroupNorm)."""
    n = 1
    for dep, _ in group:
        module = dep.target.module
        if isinstance(module, nn.Conv2d) and module.groups == module.out_channels:
            continue  # depthwise: pruned channel by channel
        pruner = graph.get_pruner_of_module(module)
        if pruner is None:
            continue
        if graph.is_out_channel_pruning_fn(dep.handler):
            n = max(n, pruner.get_out_channel_groups(module))
        elif graph.is_in_channel_pruning_fn(dep.handler):
            n = max(n, pruner.get_in_channel_groups(module))
    return n


def coupled_groups(graph, unsafe: set) -> Iterator[tuple[nn.Module, list[nn.Module], object]]:  # noqa: ANN001
    """``(root, layers whose outputs it prunes, group)`` for every group that can be pruned."""
    visited: set[nn.Module] = set()
    for module in list(graph.module2node):
        if not isinstance(module, COMPUTE_TYPES) or module in visited:
            continue
        pruner = graph.get_pruner_of_module(module)
        channels = pruner.get_out_channels(module) if pruner is not None else None
        if not channels:
            continue
        try:
            group = graph.get_pruning_group(module, pruner.prune_out_channels, list(range(channels)))
        except (IndexError, ZeroDivisionError, KeyError):
            continue  # the channels run through an op whose index mapping cannot be followed
        producers = [
            dep.target.module for dep, _ in group
            if isinstance(dep.target.module, COMPUTE_TYPES) and graph.is_out_channel_pruning_fn(dep.handler)
        ]
        visited.update(producers)
        visited.add(module)
        if ({dep.source for dep, _ in group} | {dep.target for dep, _ in group}) & unsafe:
            continue
        yield module, producers, group


@register(ChannelPruneConfig)
def apply_channel_prune(
    model: nn.Module, configs: dict[str, ChannelPruneConfig], ctx: MethodContext
) -> None:
    import torch_pruning as tp  # deferred: heavy import

    asked: dict[nn.Module, float] = {}
    for name, config in configs.items():
        # After low rank, a layer is a pair of factors: prune the outputs of the last one.
        targets = list(leaf_targets(model, name))
        if targets and config.ratio > 0:
            asked[targets[-1][1]] = config.ratio
    if not asked:
        return
    # Output layers by their plan names; after low rank the output is the last factor.
    outputs = {list(leaf_targets(model, n))[-1][1] for n in ctx.output_layers}
    norm = max(c.norm for c in configs.values())
    logging.getLogger("torch_pruning").setLevel(logging.ERROR)
    with torch.no_grad():
        shape = tuple(model(ctx.example_input).shape)
    try:
        _prune_attention(model, asked, norm)
        with warnings.catch_warnings():  # "unwrapped parameters" (class tokens, position embeddings) is expected
            warnings.simplefilter("ignore")
            _prune_groups(model, ctx.example_input, asked, outputs, tp.importance.GroupMagnitudeImportance(p=norm))
    except Exception as exc:  # Torch-Pruning meets a model it cannot trace or cut: the trial fails
        raise TrialFailed(f"structured pruning failed: {type(exc).__name__}: {exc}".splitlines()[0][:300]) from exc
    try:
        with torch.no_grad():
            after = tuple(model(ctx.example_input).shape)
    except Exception as exc:  # a coupling the graph missed shows up as a shape error here
        raise TrialFailed(f"structured pruning broke the model: {type(exc).__name__}: {exc}".splitlines()[0]) from exc
    if after != shape:
        raise TrialFailed(f"structured pruning changed the output shape from {shape} to {after}")


def _prune_attention(model: nn.Module, asked: dict[nn.Module, float], norm: int) -> None:
    """Attention projections, head by head (``attention.prune_head_dims``).

    Their outputs are split into heads by a reshape Torch-Pruning cannot follow, so the graph
    leaves them alone; here q and k lose the same dims (the mean of their ratios) and v loses
    its own with ``out_proj``'s matching inputs, equally in every head.
    """
    for module in model.modules():
        if not isinstance(module, ExplicitMultiheadAttention):
            continue
        q, k, v = (list(leaf_targets(module, p))[-1][1] for p in ("q_proj", "k_proj", "v_proj"))
        qk = (asked.pop(q, 0.0) + asked.pop(k, 0.0)) / 2
        prune_head_dims(module, qk, asked.pop(v, 0.0), norm)


def _prune_groups(model: nn.Module, example_input: torch.Tensor, asked: dict[nn.Module, float],
                  outputs: set[nn.Module], importance) -> None:  # noqa: ANN001
    import torch_pruning as tp

    with _tolerant_reshapes() as unsafe:  # the graph maps indices lazily: guard every use
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_input)
        cuts: list[tuple[nn.Module, list[int]]] = []
        for root, producers, group in coupled_groups(graph, unsafe):
            voters = [p for p in producers if not is_depthwise(p)]
            if not voters or any(p in outputs for p in producers):
                continue
            ratio = sum(asked.get(v, 0.0) for v in voters) / len(voters)
            try:
                cut = _channels_to_cut(graph, group, ratio, importance)
            except (IndexError, RuntimeError):
                continue  # a coupling the importance cannot score; nothing was changed yet
            if cut:
                cuts.append((root, cut))
        # Rank every group before cutting any, so importances see the original weights.
        for root, cut in cuts:
            pruner = graph.get_pruner_of_module(root)
            graph.get_pruning_group(root, pruner.prune_out_channels, cut).prune()


def _channels_to_cut(graph, group, ratio: float, importance) -> list[int]:  # noqa: ANN001
    """The ``round(ratio * n)`` least important channels of each of the group's channel groups."""
    if ratio <= 0:
        return []
    imp = importance(group)
    if imp is None:
        return []
    n_groups = _channel_groups(graph, group)
    size = len(imp) // n_groups
    n_cut = min(int(round(ratio * size)), size - 1)  # never remove every channel
    if n_cut <= 0:
        return []
    per_group = imp.view(n_groups, size).mean(dim=0)  # grouped layers lose the same channels in each group
    order = torch.argsort(per_group.cpu(), stable=True)[:n_cut]
    return sorted(int(i) + g * size for g in range(n_groups) for i in order)
