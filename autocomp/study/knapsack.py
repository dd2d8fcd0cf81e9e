"""The integer program behind the seeded plans: per-layer options predicted from the profile.

A layer's option is one combination of its knobs' profiled values (``autocomp.study.profile``),
predicted additively:

- **damage**: the sum of each value's KL divergence (the additive model of HAWQ, MCT and
  ModelOpt's ``auto_quantize``);
- **bytes**: per layer, each knob keeps a share ``(b + delta) / b`` of the layer's fp32 bytes
  ``b``; the shares multiply (4 bits of half the weights keep about an eighth of ``b``/2 and a
  mask), and the layers' changes add to the teacher artifact's bytes;
- **latency**: the values' ratios of the whole artifact's time multiply (each saves a share of
  what is left: cutting conv2's channels also shrinks the fc1 that int8 speeds up), so their
  logarithms add.

Options another of the same layer beats on all three are left out; ``solve`` picks one per
layer (a multiple-choice knapsack) with ``scipy.optimize.milp`` (HiGHS).

Example::

    options = layer_options(record)
    chosen = solve(options, "bytes", -50_000)   # least damage for 50 kB less
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp


@dataclass(frozen=True)
class Option:
    """One combination of a layer's knob values and its predicted changes."""

    values: dict[str, Any]  # knob -> value (only changing knobs)
    damage: float
    bytes: float  # change of the artifact's bytes
    latency: float  # log of the latency ratio


def layer_options(record: dict[str, Any], allowed: dict[str, set] | None = None,
                  only: frozenset[str] | None = None) -> dict[str, list[Option]]:
    """``{layer: options}``: every combination of its profiled values (no-op included), those
    beaten on damage, bytes and latency by another of the layer left out. ``allowed``
    (``{param: values}``) keeps only values the (shaped) space still offers; ``only`` (knob
    names) keeps only those knobs' values, and the same layers (one with none keeps its no-op alone).
    Restricting before the comparison matters: LeNet-5's fc1 cut by 3/4 alone was beaten by a
    cut of 5/8 with rank 1/8 (rank's KL is near 0, and predicted times multiply), so filtering
    the combined options by knob afterwards left no fc1 cut to plans of channel cuts alone."""
    by_layer: dict[str, dict[str, list[dict]]] = {}
    for e in record["entries"]:
        if allowed is not None and e["value"] not in allowed.get(e["param"], ()):
            continue
        per_knob = by_layer.setdefault(e["layer"], {})
        if only is None or e["knob"] in only:
            per_knob.setdefault(e["knob"], []).append(e)
    out = {}
    for layer, per_knob in by_layer.items():
        base = float(record["layer_bytes"].get(layer) or 0) or 1.0
        names = list(per_knob)
        choices = [[None, *per_knob[k]] for k in names]
        options = [combine([e for e in combo if e is not None], base) for combo in itertools.product(*choices)]
        out[layer] = _undominated(options)
    return out


def combine(picked: list[dict], base: float) -> Option:
    """A combination of one layer's profile entries (``base``: the layer's fp32 bytes)."""
    share = np.prod([max(0.0, (base + e["bytes"]) / base) for e in picked]) if picked else 1.0
    return Option({e["knob"]: e["value"] for e in picked}, float(sum(e["kl"] for e in picked)),
                  float(base * (share - 1.0) if len(picked) > 1 else sum(e["bytes"] for e in picked)),
                  float(sum(np.log(e["latency"][0]) if e["latency"] else 0.0 for e in picked)))


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


def solve(options: dict[str, list[Option]], budget: str, limit: float, minimize: str = "damage",
          cap: tuple[str, float] | None = None) -> list[Option] | None:
    """One option per layer minimizing the summed ``minimize`` (``"damage"``, or ``"bytes"`` /
    ``"latency"``) with the summed change of ``budget`` (another of the three) at most
    ``limit``, and that of ``cap[0]`` at most ``cap[1]``; None when no choice meets them."""
    layers = list(options)
    flat = [(i, o) for i, layer in enumerate(layers) for o in options[layer]]
    n = len(flat)
    goal = np.array([getattr(o, minimize) for _, o in flat])
    spend = np.array([getattr(o, budget) for _, o in flat])
    third = ({"damage", "bytes", "latency"} - {minimize, budget}).pop()
    other = np.array([getattr(o, third) for _, o in flat])
    # Ties in the goal go to the smaller spend, then to the third quantity (tiny weights).
    scale = max(1e-12, float(np.abs(goal).max()))
    c = goal + 1e-6 * scale * spend / max(1e-12, np.abs(spend).max()) \
        + 1e-7 * scale * other / max(1e-12, np.abs(other).max())
    one = np.zeros((len(layers), n))
    for j, (i, _) in enumerate(flat):
        one[i, j] = 1.0
    constraints = [LinearConstraint(one, 1, 1), LinearConstraint(spend[None, :], -np.inf, limit)]
    if cap is not None:
        constraints.append(LinearConstraint(np.array([[getattr(o, cap[0]) for _, o in flat]]), -np.inf, cap[1]))
    res = milp(c, constraints=constraints, integrality=np.ones(n), bounds=Bounds(0, 1))
    if res.x is None:
        return None
    chosen = np.flatnonzero(res.x > 0.5)
    return [flat[j][1] for j in chosen]
