"""The space a study offers: per-layer values that were timed and do not pay are dropped.

A study times, once, each layer a space may factorize or prune against every value the space
offers for it (``autocomp.measure.layer_cost``) and keeps a value only when the changed layer
runs faster than the original by more than the measured spread (the no-op value is always
kept). A method whose timing shows only part of its effect (``VARIANT_PARTIAL``: a channel cut
also shrinks the layers that read the channels) loses a value only when the layer alone is
slower by more than the spread. A knob left with one value is no longer searched. The timings are stored on the study
(attr ``layer_costs``), so a resumed run or another worker rebuilds the very same space without
timing again. Knobs of grouped layers (``group:``) and continuous ranges are left as written.

Example::

    space, record = costed_space(space, teacher, outputs, x[:1], MeasureConfig())
    space.dimensions(teacher, outputs)   # fewer than before when some values cannot pay
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from autocomp.measure.latency import Ratio
from autocomp.measure.layer_cost import layer_costs, pays, ratio_record
from autocomp.measure.protocol import MeasureConfig
from autocomp.methods.registry import knobs
from autocomp.study.space import Domain, SearchSpace


def probed_knobs() -> dict[str, Any]:
    """Knob name -> ``variant(layer, value)`` of the methods that can be timed layer by layer."""
    out = {}
    for name, knob in knobs().items():
        variant = getattr(knob.method, "variant", None)
        if variant is not None:
            out[name] = variant
    return out


def domain_values(domain: Domain) -> tuple | None:
    """Every value a domain can take, or None for a continuous range (not enumerable)."""
    if domain.choices is not None:
        return tuple(domain.choices)
    if domain.low is None:
        return (domain.fixed,)
    if domain.step is None:
        return None
    n = int(round((domain.high - domain.low) / domain.step))
    values = [domain.low + k * domain.step for k in range(n + 1)]
    return tuple(int(v) if domain.integer else round(v, 10) for v in values)


def costed_space(space: SearchSpace, model: nn.Module, outputs: frozenset[str], example: torch.Tensor,
                 config: MeasureConfig = MeasureConfig(),
                 record: dict[str, dict[str, list[float] | None]] | None = None,
                 ) -> tuple[SearchSpace, dict[str, dict[str, list[float] | None]]]:
    """The space with the values that do not pay dropped, and the timing record it was decided on.

    ``record`` (``{"layer.knob": {str(value): [median, low, high] or None}}``, as returned
    before) skips the timing: a resumed study decides again from the same numbers.
    """
    variants = probed_knobs()
    table = knobs()
    candidates: dict[tuple[str, str], tuple] = {}
    for p in space.params(model, outputs):
        values = domain_values(p.spec)
        if p.knob not in variants or p.name != f"{p.layer}.{p.knob}" or not p.spec.searched or values is None:
            continue  # not timeable, a group's shared value, or a continuous range
        changing = tuple(v for v in values if table[p.knob].active(v))
        if changing:
            candidates[(p.layer, p.knob)] = changing
    if record is None:
        # Decisions read a whole spread (interquartile range), which more rounds do not narrow:
        # half a trial's timing per layer gave the same decisions on LeNet-5 as a whole one.
        probe = dataclasses.replace(config, min_seconds=config.min_seconds / 2)
        measured = layer_costs(model, example[:1], candidates, variants, probe) if candidates else {}
        record = {f"{layer}.{knob}": {str(v): ratio_record(r) for v, r in ratios.items()}
                  for (layer, knob), ratios in measured.items()}
    overrides: dict[str, Domain] = {}
    for p in space.params(model, outputs):
        timed = record.get(p.name)
        if (p.layer, p.knob) not in candidates or timed is None:
            continue
        partial = getattr(table[p.knob].method, "VARIANT_PARTIAL", False)
        keep = tuple(v for v in domain_values(p.spec)
                     if not table[p.knob].active(v) or _keep(timed.get(str(v)), partial))
        if not keep or len(keep) == len(domain_values(p.spec)):
            continue  # nothing pays and the space never offered leaving the layer alone: as written
        overrides[p.name] = Domain(fixed=keep[0]) if len(keep) == 1 else Domain(choices=keep)
    return dataclasses.replace(space, overrides=overrides), record


def _keep(stored: list[float] | None, partial: bool) -> bool:
    """Pays (the whole spread below 1); for a partial timing, not measurably slower (spread not above 1)."""
    if stored is None:  # the value leaves the layer as it is: nothing to search
        return False
    return stored[1] <= 1.0 if partial else pays(Ratio(stored[0], stored[1], stored[2], 0))
