"""The seeded frontier: whole plans predicted from the profile, chosen by an integer program.

A plan's prediction adds its layers' profile entries (``autocomp.study.profile``):

- **damage**: the sum of each value's KL divergence (the additive model of HAWQ, MCT and
  ModelOpt's ``auto_quantize``);
- **bytes**: per layer, each knob keeps a share ``(b + delta) / b`` of the layer's fp32 bytes
  ``b``; the shares multiply (4 bits of half the weights keep about an eighth of ``b``/2 and a
  mask), and the layers' changes add to the teacher artifact's bytes;
- **latency**: the values' ratios of the whole artifact's time multiply (each saves a share of
  what is left: cutting conv2's channels also shrinks the fc1 that int8 speeds up), so their
  logarithms add.

Each layer picks one combination of its knobs' values (multiple-choice knapsack); combinations
another of the same layer beats on all three are left out first. ``scipy.optimize.milp``
(HiGHS) minimizes the predicted damage under a byte budget, and separately under a latency
budget, at levels spread geometrically between the most compressed prediction and the teacher.

Example::

    seeds = seed_plans(record, space, model, outputs, n=8)
    seeds[0].params        # {"conv1.bits": 4, "fc1.sparsity": 0.75, ...}: enqueued as a trial
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from torch import nn

from autocomp.methods.registry import knobs
from autocomp.study.baselines import in_domain
from autocomp.study.costs import domain_values
from autocomp.study.space import SearchSpace

MIN_LATENCY = 0.05  # the fastest latency budget is never below this ratio
# The smallest byte budget is at least this share of the teacher's bytes: a channel cut's saving
# is counted in the layer it cuts and the layer that reads it, so sums overshoot at the far end.
MIN_SIZE_SHARE = 1 / 128


@dataclass(frozen=True)
class Option:
    """One combination of a layer's knob values and its predicted changes."""

    values: dict[str, Any]  # knob -> value (only changing knobs)
    damage: float
    bytes: float  # change of the artifact's bytes
    latency: float  # log of the latency ratio


@dataclass(frozen=True)
class Seed:
    params: dict[str, Any]  # Optuna params of the plan (``layer.knob`` and ``distill.*``)
    budget: str  # "size" or "latency"
    level: int
    limit: float  # the budget: artifact bytes, or latency ratio to the teacher
    predicted: dict[str, float]  # kl, size_bytes, latency_ratio


def layer_options(record: dict[str, Any], allowed: dict[str, set] | None = None) -> dict[str, list[Option]]:
    """``{layer: options}``: every combination of its profiled values (no-op included), those
    beaten on damage, bytes and latency by another of the layer left out. ``allowed``
    (``{param: values}``) keeps only values the (shaped) space still offers."""
    by_layer: dict[str, dict[str, list[dict]]] = {}
    for e in record["entries"]:
        if allowed is not None and e["value"] not in allowed.get(e["param"], ()):
            continue
        by_layer.setdefault(e["layer"], {}).setdefault(e["knob"], []).append(e)
    out = {}
    for layer, per_knob in by_layer.items():
        base = float(record["layer_bytes"].get(layer) or 0) or 1.0
        names = list(per_knob)
        choices = [[None, *per_knob[k]] for k in names]
        options = []
        for combo in itertools.product(*choices):
            picked = [e for e in combo if e is not None]
            share = np.prod([max(0.0, (base + e["bytes"]) / base) for e in picked]) if picked else 1.0
            options.append(Option(
                {e["knob"]: e["value"] for e in picked}, float(sum(e["kl"] for e in picked)),
                float(base * (share - 1.0) if len(picked) > 1 else sum(e["bytes"] for e in picked)),
                float(sum(np.log(e["latency"][0]) if e["latency"] else 0.0 for e in picked))))
        out[layer] = _undominated(options)
    return out


def _undominated(options: list[Option]) -> list[Option]:
    v = np.array([[o.damage, o.bytes, o.latency] for o in options])
    keep = []
    for i, row in enumerate(v):
        beaten = np.all(v <= row, axis=1) & np.any(v < row, axis=1)
        if not beaten.any():
            keep.append(i)
    # Equal predictions keep the first (fewest changes: the no-op combination comes first).
    seen, out = set(), []
    for i in keep:
        key = tuple(v[i])
        if key not in seen:
            seen.add(key)
            out.append(options[i])
    return out


def solve(options: dict[str, list[Option]], budget: str, limit: float) -> list[Option] | None:
    """One option per layer minimizing the summed damage with the summed change of ``budget``
    (``"bytes"`` or ``"latency"``) at most ``limit``; None when no choice meets it."""
    layers = list(options)
    flat = [(i, o) for i, layer in enumerate(layers) for o in options[layer]]
    n = len(flat)
    damage = np.array([o.damage for _, o in flat])
    spend = np.array([getattr(o, budget) for _, o in flat])
    other = np.array([o.latency if budget == "bytes" else o.bytes for _, o in flat])
    # Ties in damage go to the smaller spend, then to the other objective (tiny weights).
    scale = max(1e-12, float(np.abs(damage).max()))
    c = damage + 1e-6 * scale * spend / max(1e-12, np.abs(spend).max()) \
        + 1e-7 * scale * other / max(1e-12, np.abs(other).max())
    one = np.zeros((len(layers), n))
    for j, (i, _) in enumerate(flat):
        one[i, j] = 1.0
    constraints = [LinearConstraint(one, 1, 1), LinearConstraint(spend[None, :], -np.inf, limit)]
    res = milp(c, constraints=constraints, integrality=np.ones(n), bounds=Bounds(0, 1))
    if res.x is None:
        return None
    chosen = np.flatnonzero(res.x > 0.5)
    return [flat[j][1] for j in chosen]


def _levels(low: float, high: float, n: int) -> list[float]:
    """``n`` budgets spread geometrically strictly between ``low`` (most compressed) and ``high``."""
    if n <= 0 or not low < high:
        return []
    return [low * (high / low) ** (k / (n + 1)) for k in range(1, n + 1)]


def seed_plans(record: dict[str, Any], space: SearchSpace, model: nn.Module, outputs: frozenset[str],
               n: int) -> list[Seed]:
    """Up to ``n`` distinct plans: ``ceil(n/2)`` under byte budgets, the rest under latency
    budgets, alternating from the tightest, each a point of ``space`` (unprofiled knobs at their
    no-op value where the space offers it, global knobs at the baselines' values)."""
    params = space.params(model, outputs)
    allowed = {}
    for p in params:
        values = domain_values(p.spec)
        if values is not None:
            allowed[p.name] = set(values)
    options = layer_options(record, allowed)
    if not options or n <= 0:
        return []
    teacher = float(record["teacher_bytes"])
    least = teacher + sum(min(o.bytes for o in opts) for opts in options.values())
    fastest = max(MIN_LATENCY, float(np.exp(sum(min(o.latency for o in opts) for opts in options.values()))))
    plans: list[Seed] = []
    seen: set = set()
    floor = max(least, teacher * MIN_SIZE_SHARE)
    sizes = [("size", "bytes", lvl, lvl - teacher) for lvl in _levels(floor, teacher, (n + 1) // 2)]
    speeds = [("latency", "latency", lvl, float(np.log(lvl))) for lvl in _levels(fastest, 1.0, n // 2)]
    # Alternating, most compressed first: a run that reaches only some seeds has both ends.
    budgets = [b for pair in itertools.zip_longest(sizes, speeds) for b in pair if b is not None]
    for level, (name, key, limit, change) in enumerate(budgets):
        chosen = solve(options, key, change)
        if chosen is None:
            continue
        values = {(layer, k): v for layer, o in zip(options, chosen, strict=True) for k, v in o.values.items()}
        point = _params(space, params, values)
        key_ = tuple(sorted(point.items(), key=lambda kv: kv[0]))
        if key_ in seen:
            continue
        seen.add(key_)
        predicted = {"kl": round(sum(o.damage for o in chosen), 6),
                     "size_bytes": max(1, round(teacher + sum(o.bytes for o in chosen))),
                     "latency_ratio": round(float(np.exp(sum(o.latency for o in chosen))), 4)}
        plans.append(Seed(point, name, level, round(limit, 4), predicted))
    return plans


def _params(space: SearchSpace, params: list, values: dict[tuple[str, str], Any]) -> dict[str, Any]:
    """The Optuna params of a plan: chosen values, else the no-op where the domain has it."""
    table = knobs()
    out: dict[str, Any] = {}
    for p in params:
        if not (p.spec.choices is not None or p.spec.low is not None):
            continue  # fixed: not a parameter
        value = values.get((p.layer, p.knob), table[p.knob].noop)
        if in_domain(p.spec, value):
            out.setdefault(p.name, value)
    distill = space.fixed_distill()
    for knob, domain in space.globals.items():
        if domain.choices is not None or domain.low is not None:
            out[f"distill.{knob}"] = getattr(distill, knob)
    return out
