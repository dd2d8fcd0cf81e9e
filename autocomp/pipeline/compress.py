"""``apply(teacher, plan)``: build the student a Plan describes.

Methods run in the order their knobs declare (``Knob.stage``): low rank -> structured
(channels) -> unstructured (masks) -> quantization. Factorizing first lets later stages see the
factors; pruning before quantization lets the quantizer's scales see the surviving weights only.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import parametrize

from autocomp.errors import AutocompError
from autocomp.methods.registry import MethodContext, handler_for, knobs
from autocomp.models.layers import compute_layers, trace_layers
from autocomp.plan import Plan


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


def apply(teacher: nn.Module, plan: Plan, example_input: torch.Tensor,
          notes: dict[str, dict] | None = None) -> nn.Module:
    """Return a compressed copy of ``teacher``; the teacher itself is never modified.

    ``notes``, when given, receives per layer what a method recorded (a decomposition's seconds,
    error, or why it was refused).

    Example::

        student = apply(teacher, Plan(layers={"fc1": LayerPlan(rank=0.25, bits=8)}), x[:1])
    """
    known = compute_layers(teacher)
    unknown = sorted(set(plan.layers) - set(known))
    if unknown:
        raise AutocompError(f"plan names layers the model does not have: {', '.join(unknown[:5])}")
    student = _private_copy(teacher).eval()
    outputs, called = trace_layers(student, example_input)
    ctx = MethodContext(example_input=example_input, output_layers=outputs, called_layers=called,
                        notes={} if notes is None else notes)
    changed = False
    for name, knob in knobs().items():
        by_type: dict[type, dict[str, object]] = {}
        for layer, lp in plan.active_layers.items():
            if name in lp.active:
                config = knob.config(lp.active[name], plan)
                by_type.setdefault(type(config), {})[layer] = config
        for config_type, configs in by_type.items():  # one knob, several methods (rank: SVD, Tucker-2, CP)
            result = handler_for(config_type)(student, configs, ctx)
            if result is not None:
                student = result
            changed = True
    if changed:  # a model that cannot run its compressed layers fails here, named as compression's fault
        with torch.no_grad():
            student(example_input)
    return student
