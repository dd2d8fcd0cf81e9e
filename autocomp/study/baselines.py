"""The baselines' coordinates in a search space: enqueued with params only when they are a point of it."""

from __future__ import annotations

from typing import Any

import torch

from autocomp.config import SearchConfig
from autocomp.models.layers import compute_layers
from autocomp.plan import BASELINES, Plan
from autocomp.study.space import Domain, SearchSpace


def baseline_points(space: SearchSpace, teacher: torch.nn.Module, outputs: frozenset[str],
                    config: SearchConfig) -> dict[str, tuple[dict[str, Any], str | None]]:
    """Each baseline's coordinates in the space: ``{name: (params, None)}``, or ``({}, why)``
    when its Plan is not a point of the space (a value outside a dimension's domain, a layer or
    knob the space leaves alone or fixes otherwise). Such a baseline runs without params: giving
    it some would tell the sampler and every foreign tool a point it did not measure.

    The teacher's Plan differs from its coordinates in one thing no space searches here: it
    runs no fine-tune (``steps`` 0). Its coordinates are the uncompressed corner, and its
    ``baseline`` attr says what it is.
    """
    layer_names = list(compute_layers(teacher))
    params_of_space = space.params(teacher, outputs)
    assigned: dict[str, dict[str, Domain]] = {}
    for p in params_of_space:
        assigned.setdefault(p.layer, {})[p.knob] = p.spec
    template = Plan(distill=space.fixed_distill(), quant_mode=space.quant_mode, seed=config.seed)
    out: dict[str, tuple[dict[str, Any], str | None]] = {}
    for name in BASELINES:
        plan = Plan.baseline(name, layer_names, template, outputs)
        why = _outside_layers(plan, layer_names, assigned)
        params = {p.name: plan.layer(p.layer).to_dict()[p.knob] for p in params_of_space
                  if p.spec.choices is not None or p.spec.low is not None}
        for knob, domain in space.globals.items():
            value = getattr(plan.distill, knob)
            if domain.choices is not None or domain.low is not None:
                if not in_domain(domain, value):
                    why = why or f"distill.{knob} is {value!r}, outside the space's domain"
                params[f"distill.{knob}"] = value
        out[name] = ({}, why) if why else (params, None)
    return out


def _outside_layers(plan: Plan, layer_names: list[str], assigned: dict[str, dict[str, Domain]]) -> str | None:
    """Why a baseline's per-layer settings are not a point of the space, or None when they are."""
    for layer in layer_names:
        for knob, value in plan.layer(layer).to_dict().items():
            domain = assigned.get(layer, {}).get(knob)
            if domain is None and knob in plan.layer(layer).active:
                return f"{layer}.{knob} is {value!r}, a setting the space never makes"
            if domain is not None and not in_domain(domain, value):
                return f"{layer}.{knob} is {value!r}, outside the space's domain"
    return None


def in_domain(domain: Domain, value: Any) -> bool:
    """Whether ``value`` is one the space can produce for this knob (Optuna's own grid tolerance)."""
    if domain.choices is not None:
        return any(c is None if value is None else (c is not None and c == value) for c in domain.choices)
    if domain.low is None:
        return value == domain.fixed
    if value is None or isinstance(value, bool) or not domain.low <= value <= domain.high:
        return False
    if domain.step is None:
        return not domain.integer or float(value).is_integer()
    k = (value - domain.low) / domain.step
    return abs(k - round(k)) < 1e-8
