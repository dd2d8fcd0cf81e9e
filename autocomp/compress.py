"""``apply(teacher, plan)``: build the student a Plan describes.

Order: low rank -> structured (channels) -> unstructured (masks) -> quantization. Factorizing
first lets later stages see the factors; pruning before quantization lets the quantizer's
scales see the surviving weights only.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import parametrize

from autocomp.errors import AutocompError
from autocomp.methods.lowrank import LowRankConfig
from autocomp.methods.prune import MagnitudePruneConfig
from autocomp.methods.quantize import QuantConfig
from autocomp.methods.registry import MethodContext, compute_layers, handler_for
from autocomp.methods.structured import ChannelPruneConfig
from autocomp.plan import LayerPlan, Plan

# (config type, how to read it off a LayerPlan; None means "this stage skips the layer")
STAGES: list[tuple[type, Callable[[LayerPlan, Plan], object | None]]] = [
    (LowRankConfig, lambda lp, p: LowRankConfig(lp.rank) if lp.rank < 1.0 else None),
    (ChannelPruneConfig, lambda lp, p: ChannelPruneConfig(lp.channel_ratio) if lp.channel_ratio > 0 else None),
    (MagnitudePruneConfig, lambda lp, p: MagnitudePruneConfig(lp.sparsity) if lp.sparsity > 0 else None),
    (QuantConfig, lambda lp, p: QuantConfig(lp.bits, p.quant_mode) if lp.bits is not None else None),
]


def output_layers(model: nn.Module, example_input: torch.Tensor) -> frozenset[str]:
    """Compute layers whose output is (a view of) the model's output; their outputs must stay."""
    layers = compute_layers(model)
    # Keep the tensors themselves: matching by id() alone failed when a freed tensor's id was
    # reused (squeezenet: a wrong layer 3 times in 20, and its classes were then pruned).
    produced: list[tuple[torch.Tensor, str]] = []
    hooks = [
        m.register_forward_hook(lambda mod, inp, out, n=name: produced.append((out, n)))
        for name, m in layers.items()
    ]
    try:
        with torch.no_grad():
            out = model(example_input)
    finally:
        for h in hooks:
            h.remove()
    outs = out if isinstance(out, (tuple, list)) else [out]
    found = {n for o in outs for t, n in produced if t is o}
    if not found and layers:  # e.g. a trailing flatten/view: fall back to the last layer run
        found = {list(layers)[-1]}
    return frozenset(found)


def _private_copy(model: nn.Module) -> nn.Module:
    """A deep copy whose parametrized modules get classes of their own.

    ``parametrize`` keeps each parametrized tensor as a property on a per-module class, and a
    deep copy shares that class with its original; removing a parametrization from the copy (as
    ``bake`` does at export) would then break the original. A copied class keeps them apart.
    """
    clone = copy.deepcopy(model)
    for module in clone.modules():
        if parametrize.is_parametrized(module):
            cls = type(module)
            module.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
    return clone


def apply(teacher: nn.Module, plan: Plan, example_input: torch.Tensor) -> nn.Module:
    """Return a compressed copy of ``teacher``; the teacher itself is never modified.

    Example::

        student = apply(teacher, Plan(layers={"fc1": LayerPlan(rank=0.25, bits=8)}), x[:1])
    """
    known = compute_layers(teacher)
    unknown = sorted(set(plan.layers) - set(known))
    if unknown:
        raise AutocompError(f"plan names layers the model does not have: {', '.join(unknown[:5])}")
    student = _private_copy(teacher).eval()
    ctx = MethodContext(example_input=example_input, output_layers=output_layers(student, example_input))
    for config_type, read in STAGES:
        configs = {}
        for name, layer_plan in plan.active_layers.items():
            config = read(layer_plan, plan)
            if config is not None:
                configs[name] = config
        if configs:
            result = handler_for(config_type)(student, configs, ctx)
            if result is not None:
                student = result
    return student
