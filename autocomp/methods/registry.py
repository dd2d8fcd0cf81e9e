"""Methods are registered handlers keyed by their config type (the torchao pattern).

Adding a method means writing a frozen config dataclass and registering a handler for it;
``compress.apply`` never grows an if/elif chain.

A handler takes the model, a mapping ``{layer name: config}`` for the layers the plan
targets, and a context with an example input; it edits the model in place or returns a new one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

Handler = Callable[[nn.Module, dict[str, object], "MethodContext"], "nn.Module | None"]
_HANDLERS: dict[type, Handler] = {}

COMPUTE_TYPES = (nn.Conv2d, nn.Linear)


@dataclass
class MethodContext:
    example_input: torch.Tensor
    output_layers: frozenset[str] = frozenset()  # layers whose outputs are the model's outputs


def register(config_type: type) -> Callable[[Handler], Handler]:
    """Register ``handler`` as the transform for ``config_type``."""

    def wrap(handler: Handler) -> Handler:
        if config_type in _HANDLERS:
            raise ValueError(f"a handler for {config_type.__name__} is already registered")
        _HANDLERS[config_type] = handler
        return handler

    return wrap


def handler_for(config_type: type) -> Handler:
    try:
        return _HANDLERS[config_type]
    except KeyError:
        raise KeyError(f"no handler registered for {config_type.__name__}") from None


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
