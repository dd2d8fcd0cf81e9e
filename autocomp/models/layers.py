"""Which modules of a model a Plan can reach, and which of them produce the model's output.

Every layer of the package that names layers (the space, ``apply``, the methods, the exporter)
asks here, so "a layer" means the same thing everywhere.

Example::

    names = list(compute_layers(model))          # ["features.0", ..., "classifier.1"]
    keep = output_layers(model, x[:1])           # frozenset({"classifier.1"})
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

COMPUTE_TYPES = (nn.Conv2d, nn.Linear)


def compute_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Leaf Conv2d / Linear modules by qualified name: the layers a Plan can target."""
    return {name: m for name, m in model.named_modules() if isinstance(m, COMPUTE_TYPES)}


def leaf_targets(model: nn.Module, name: str) -> Iterator[tuple[str, nn.Module]]:
    """The compute leaves a plan entry ``name`` means.

    After low-rank factorization ``fc1`` becomes a Sequential of two Linears; later methods
    that target ``fc1`` apply to both factors.
    """
    module = model.get_submodule(name)
    if isinstance(module, COMPUTE_TYPES):
        yield name, module
        return
    for sub, child in module.named_modules():
        if sub and isinstance(child, COMPUTE_TYPES):
            yield f"{name}.{sub}", child


def output_layers(model: nn.Module, example_input: torch.Tensor) -> frozenset[str]:
    """Compute layers whose output is (a view of) the model's output; their outputs must stay."""
    return trace_layers(model, example_input)[0]


def called_layers(model: nn.Module, example_input: torch.Tensor) -> frozenset[str]:
    """Compute layers the model calls as modules.

    A layer missing here is either unused or read by attribute (Swin's attention passes
    ``qkv.weight`` to ``F.linear``): masks and quantization still reach it through its weight,
    but a method that replaces the module (low rank) would never be run.
    """
    return trace_layers(model, example_input)[1]


def trace_layers(model: nn.Module, example_input: torch.Tensor) -> tuple[frozenset[str], frozenset[str]]:
    """``(output layers, called layers)`` from one forward pass."""
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
    return frozenset(found), frozenset(n for _, n in produced)
