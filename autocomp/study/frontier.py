"""The seeded frontier: whole plans the integer program proposes and their own files confirm.

The additive model of ``autocomp.study.knapsack`` is solved under a byte budget, and separately
under a latency budget, at levels spread geometrically between the most compressed prediction
and the teacher. Given ``measure`` (``autocomp.study.profile.measure_plans``), the candidates it
proposes are built and measured with no fine-tune, and the files decide which plan each budget
gets (``seed_plans``).

Example::

    seeds = seed_plans(record, space, model, outputs, n=8, measure=measure)
    seeds[0].params        # {"conv1.bits": 4, "fc1.sparsity": 0.75, ...}: enqueued as a trial
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from autocomp.methods.registry import knobs
from autocomp.study.baselines import in_domain
from autocomp.study.costs import domain_values
from autocomp.study.hypervolume import contribution
from autocomp.study.knapsack import Option, combine, layer_options, solve
from autocomp.study.space import SearchSpace

MIN_LATENCY = 0.05  # the fastest latency budget is never below this ratio
# The smallest byte budget is at least this share of the teacher's bytes: a channel cut's saving
# is counted in the layer it cuts and the layer that reads it, so sums overshoot at the far end.
MIN_SIZE_SHARE = 1 / 128


@dataclass(frozen=True)
class Seed:
    params: dict[str, Any]  # Optuna params of the plan (``layer.knob`` and ``distill.*``)
    budget: str  # "size" or "latency"
    level: int
    limit: float  # the budget: artifact bytes, or latency ratio to the teacher
    predicted: dict[str, float]  # kl, size_bytes, latency_ratio
    untrained: dict[str, Any] | None = None  # measured on its artifact before any fine-tune (measure_plans)


def _levels(low: float, high: float, n: int) -> list[float]:
    """``n`` budgets spread geometrically strictly between ``low`` (most compressed) and ``high``."""
    if n <= 0 or not low < high:
        return []
    return [low * (high / low) ** (k / (n + 1)) for k in range(1, n + 1)]


Measure = Callable[[list[dict[str, Any]]], list[dict[str, Any] | None]]
# Damage budgets (summed KL, nats) under which the fastest and the smallest plans are also
# proposed when candidates are measured: the KL of a channel cut before any fine-tune
# overstates what a fine-tune leaves (LeNet-5's conv1 cut in half: 0.17 nats alone, while
# every layer cut in half loses 0.5 point after 150 steps), so least-damage plans alone never
# reach the fast end.
DAMAGE_LEVELS = (0.03, 0.1, 0.3)
REFINE_STEP = 0.03  # a latency change that counts in ``_Proposer.refined`` (the timing's least spread)
REFINE_WIDTH = 8  # undos measured per refinement pass
# Damage (nats) a seed may exceed a taken plan's by and still be that plan again (``_redundant``):
# a thirtieth of the least ``DAMAGE_LEVELS`` budget.
KL_NEAR = 1e-3


def seed_plans(record: dict[str, Any], space: SearchSpace, model: nn.Module, outputs: frozenset[str],
               n: int, measure: Measure | None = None,
               references: dict[str, dict[str, Any]] | None = None) -> list[Seed]:
    """Up to ``n`` distinct plans: ``ceil(n/2)`` under byte budgets, the rest under latency
    budgets, each a point of ``space`` (unprofiled knobs at their no-op value where the space
    offers it, global knobs at the baselines' values), picked alternately from the tightest
    budgets and returned in ``hv_order``.

    With ``measure`` (params -> the untrained artifact's ``kl``, ``size_bytes`` and
    ``latency_ratio``, see ``profile.measure_plans``) the additive model only proposes and the
    artifacts decide. Candidates: each budget solved once per family of knobs (all, each but
    one, each alone), and the smallest and the fastest plan of each family under each of
    ``DAMAGE_LEVELS``. All are measured; where none meets a budget, each family is solved once
    more with the budget moved by the miss its candidate measured. Each budget then takes the
    least damaging candidate (measured KL) not already taken whose measured bytes or latency
    meet it, else the closest. The model misses interactions between layers: int8 on a layer
    whose inputs a channel cut has halved can cost more than it saves, and a cut's saving in
    the layer that reads it is counted again by that layer's own options.

    ``references`` (``{name: params}``, with ``measure``): plans a user would pick by hand (uniform
    int8, int4 ...), each measured; one more seed per reference is the least damaging candidate whose
    file is smaller and ``REFINE_STEP`` faster than its (``_beating_picks``): beat them, not sit near them.
    """
    params = space.params(model, outputs)
    allowed = {p.name: set(v) for p in params if (v := domain_values(p.spec)) is not None}
    propose = _Proposer(record, allowed, space, params)
    options = propose.options()
    if not options or n <= 0:
        return []
    teacher = float(record["teacher_bytes"])
    least = teacher + sum(min(o.bytes for o in opts) for opts in options.values())
    fastest = max(MIN_LATENCY, float(np.exp(sum(min(o.latency for o in opts) for opts in options.values()))))
    floor = max(least, teacher * MIN_SIZE_SHARE)
    sizes = [("size", "bytes", lvl, lvl - teacher) for lvl in _levels(floor, teacher, (n + 1) // 2)]
    speeds = [("latency", "latency", lvl, float(np.log(lvl))) for lvl in _levels(fastest, 1.0, n // 2)]
    # Alternating, most compressed first: the tightest budgets of both kinds pick first.
    budgets = [b for pair in itertools.zip_longest(sizes, speeds) for b in pair if b is not None]
    if measure is None:
        seeds: dict[tuple, Seed] = {}
        for level, b in enumerate(budgets):
            if (k := propose(None, b[1], b[3])) is not None and k not in seeds:
                seeds[k] = propose.seed(k, level, b)
        return hv_order(list(seeds.values()), teacher)
    families = _families(record, allowed)
    tried = {(f, level): propose(f, b[1], b[3]) for level, b in enumerate(budgets) for f in families}
    for f, goal, level in itertools.product(families, ("bytes", "latency"), DAMAGE_LEVELS):
        propose(f, "damage", level, minimize=goal)
    measured = propose.measured(measure)
    for level, (_, key, limit, change) in enumerate(budgets):
        if any(_spend(m, key) <= limit for m in measured.values()):
            continue
        for family in families:
            k = tried[(family, level)]
            miss = _miss(propose.found.get(k), measured.get(k), key)
            if miss is not None:  # the model's budget moved by what its candidate missed by
                propose(family, key, (limit / miss - teacher) if key == "bytes" else change - float(np.log(miss)))
    beaten = _beaten(propose, measure, references or {}, families)
    used = set(beaten)  # the references run as baselines; a seed is another plan
    picks = _measured_picks(propose, measure, budgets, used)
    return hv_order(picks + _beating_picks(propose, measure, beaten, used, len(budgets)), teacher)


def hv_order(seeds: list[Seed], teacher_bytes: float) -> list[Seed]:
    """``seeds`` in the order they add the most to the front of their untrained files, greedily:
    the first seed is the one whose (KL, bytes, latency) box is the largest, each next one adds
    the most volume to those before it; seeds that add none keep their order at the end. KL is
    scaled by the largest seed's (every seed counts: a fast plan's KL before the fine-tune
    overstates what the fine-tune leaves), bytes by the teacher's; a seed not measured counts
    with its prediction. A run that reaches only the first seeds (``--timeout``, or a room
    smaller than the seeds) gets the most front from them: replayed on 24 benchmark runs made
    in budget order, this order raised the front's volume after the first fifth of the trials
    in 23 (``experiments/seed_order.py``)."""
    if len(seeds) < 2:
        return list(seeds)
    rows = np.asarray([_untrained_or_predicted(s) for s in seeds], dtype=float)
    worst = rows[:, 0].max() * 1.01  # just above the worst: its seed still has a box
    rows[:, 0] = rows[:, 0] / worst if worst > 0 else 0.0
    rows[:, 1] /= max(teacher_bytes, 1.0)
    unit = np.ones(3)
    order: list[int] = []
    left = list(range(len(seeds)))
    while left:
        gains = [contribution(rows[i], rows[order], unit) for i in left]
        best = int(np.argmax(gains))  # the first of equals: the earlier seed
        if gains[best] <= 1e-12:
            break
        order.append(left.pop(best))
    return [seeds[i] for i in order + left]


def _untrained_or_predicted(seed: Seed) -> tuple[float, float, float]:
    """A seed's (KL, bytes, latency ratio) measured on its untrained file, else predicted."""
    m = seed.untrained
    if m is not None and m.get("latency_ratio"):
        return float(m["kl"]), float(m["size_bytes"]), float(m["latency_ratio"][0])
    p = seed.predicted
    return float(p["kl"]), float(p["size_bytes"]), float(p["latency_ratio"])


class _Proposer:
    """Turns solved budgets and edited plans into candidate points, each remembered once with
    its values, Optuna params and the additive model's prediction."""

    def __init__(self, record: dict[str, Any], allowed: dict[str, set], space: SearchSpace, params: list) -> None:
        self.record, self.allowed, self.space, self.params = record, allowed, space, params
        self._options: dict[frozenset[str] | None, dict[str, list[Option]]] = {}
        self.entries = {(e["layer"], e["knob"], e["value"]): e for e in record["entries"]}
        self.found: dict[tuple, dict[str, Any]] = {}  # point -> {"values", "params", "predicted"}
        self._measured: dict[tuple, dict[str, Any] | None] = {}

    def __call__(self, family: frozenset[str] | None, budget: str, change: float,
                 minimize: str = "damage", cap: tuple[str, float] | None = None) -> tuple | None:
        options = self.options(family)
        chosen = solve(options, budget, change, minimize, cap)
        if chosen is None:
            return None
        return self.point({(layer, k): v for layer, o in zip(options, chosen, strict=True)
                           for k, v in o.values.items()})

    def options(self, family: frozenset[str] | None = None) -> dict[str, list[Option]]:
        """Each layer's options from the knobs of ``family`` alone (None: every knob)."""
        if family not in self._options:
            self._options[family] = layer_options(self.record, self.allowed, family)
        return self._options[family]

    def point(self, values: dict[tuple[str, str], Any]) -> tuple:
        """The candidate of ``{(layer, knob): value}``, predicted from its profile entries."""
        params = _params(self.space, self.params, values)
        key = _key(params)
        if key not in self.found:
            teacher = float(self.record["teacher_bytes"])
            per_layer: dict[str, list[dict]] = {}
            for (layer, knob), value in values.items():
                if (layer, knob, value) in self.entries:
                    per_layer.setdefault(layer, []).append(self.entries[(layer, knob, value)])
            chosen = [combine(picked, float(self.record["layer_bytes"].get(layer) or 0) or 1.0)
                      for layer, picked in per_layer.items()]
            predicted = {"kl": round(sum(o.damage for o in chosen), 6),
                         "size_bytes": max(1, round(teacher + sum(o.bytes for o in chosen))),
                         "latency_ratio": round(float(np.exp(sum(o.latency for o in chosen))), 4)}
            self.found[key] = {"values": dict(values), "params": params, "predicted": predicted}
        return key

    def seed(self, point_key: tuple, level: int, budget: tuple, untrained: dict[str, Any] | None = None) -> Seed:
        name, _, limit, _ = budget
        return Seed(self.found[point_key]["params"], name, level, round(limit, 4),
                    self.found[point_key]["predicted"], untrained)

    def measured(self, measure: Measure) -> dict[tuple, dict[str, Any] | None]:
        """Every candidate's measurement; only the new ones are measured."""
        new = [k for k in self.found if k not in self._measured]
        if new:
            self._measured.update(zip(new, measure([self.found[k]["params"] for k in new]), strict=True))
        return self._measured

    def refined(self, point_key: tuple, measure: Measure, avoid: set, passes: int = 4) -> tuple:
        """Greedy on measured artifacts, one value undone per pass: the undo that makes the file
        fastest when that is ``REFINE_STEP`` faster, else the least damaging undo (measured KL)
        that is not that much slower: a value that buys no time only costs accuracy. Never
        onto a point in ``avoid`` (another budget's seed)."""
        for _ in range(passes):
            now = self.measured(measure)[point_key]
            if not now.get("latency_ratio"):
                break  # untimed (no ratio beside the teacher): nothing to compare an undo with
            values = self.found[point_key]["values"]
            near = [self.point({k: v for k, v in values.items() if k != drop}) for drop in self._least_paying(values)]
            near = [k for k in near if k not in avoid]
            measured = self.measured(measure)
            timed = {k: measured[k]["latency_ratio"][0] for k in near
                     if measured[k] is not None and measured[k].get("latency_ratio")}
            faster = [k for k in timed if timed[k] < now["latency_ratio"][0] * (1 - REFINE_STEP)]
            kinder = [k for k in timed if timed[k] <= now["latency_ratio"][0] * (1 + REFINE_STEP)
                      and measured[k]["kl"] < now["kl"]]
            if faster:
                point_key = min(faster, key=timed.get)
            elif kinder:
                point_key = min(kinder, key=lambda k: measured[k]["kl"])
            else:
                break
        return point_key

    def _least_paying(self, values: dict[tuple[str, str], Any]) -> list[tuple[str, str]]:
        """The ``REFINE_WIDTH`` values of a plan whose profile entries bought the least time alone
        (an unprofiled value first): the undos a refinement pass measures. A deep plan holds tens
        of values, and each undo is a built and timed artifact (ResNet-18: about 2.6 s each)."""
        def saved(key: tuple[str, str]) -> float:
            entry = self.entries.get((*key, values[key]))
            return -math.inf if entry is None or not entry["latency"] else -entry["latency"][0]
        return sorted(values, key=saved)[:REFINE_WIDTH]


def _miss(found: dict[str, Any] | None, measured: dict[str, Any] | None, key: str) -> float | None:
    """Measured over predicted bytes or latency ratio (None when it cannot be told)."""
    if found is None:
        return None
    spend = _spend(measured, key)
    want = found["predicted"]["size_bytes" if key == "bytes" else "latency_ratio"]
    return spend / want if math.isfinite(spend) and want > 0 and spend > 0 else None


def _families(record: dict[str, Any], allowed: dict[str, set]) -> list[frozenset[str] | None]:
    """The sets of knobs a budget is solved with: all of them (None), each but one, each alone;
    the knobs are those the profile measured at a value the space still offers."""
    used = sorted({e["knob"] for e in record["entries"] if e["value"] in allowed.get(e["param"], ())})
    subsets = [frozenset(c) for r in (len(used) - 1, 1) if r > 0 for c in itertools.combinations(used, r)]
    return [None, *dict.fromkeys(subsets)]


def _measured_picks(propose: _Proposer, measure: Measure, budgets: list[tuple], used: set) -> list[Seed]:
    """Per budget, the least damaging candidate not already taken (``used``, which grows) whose
    measured bytes or latency meet it, else the one that comes closest; a latency pick is then
    ``refined``. Each Seed carries its measurement."""
    out = []
    for level, budget in enumerate(budgets):
        _, key, limit, _ = budget
        measured = propose.measured(measure)
        spend = {k: _spend(m, key) for k, m in measured.items()
                 if m is not None and k not in used and not _redundant(m, measured, used)}
        if not spend:
            continue
        meeting = [k for k in spend if spend[k] <= limit]
        pick = min(meeting, key=lambda k: measured[k]["kl"]) if meeting else min(spend, key=spend.get)
        if key == "latency":
            pick = propose.refined(pick, measure, avoid=used)
        measured = propose.measured(measure)
        if _redundant(measured[pick], measured, used):
            continue  # refined onto what a taken plan already gives
        used.add(pick)
        out.append(propose.seed(pick, level, budget, measured[pick]))
    return out


def _redundant(m: dict[str, Any], measured: dict[tuple, dict[str, Any] | None], taken: set) -> bool:
    """Whether a taken plan (a seed, or a baseline's plan) gives what candidate ``m`` gives on
    its file: no more damage (``KL_NEAR``), bytes and time within ``REFINE_STEP``. A trial on it
    would repeat that plan's; at 224 px a trial is minutes (ResNet-18: 4 of 13 seeds were one
    plan, 4.9 MB and 0.43-0.44x)."""
    def covers(t: dict[str, Any] | None) -> bool:
        return (t is not None and bool(t.get("latency_ratio")) and bool(m.get("latency_ratio"))
                and t["kl"] <= m["kl"] * (1 + REFINE_STEP) + KL_NEAR
                and t["size_bytes"] <= m["size_bytes"] * (1 + REFINE_STEP)
                and t["latency_ratio"][0] <= m["latency_ratio"][0] * (1 + REFINE_STEP))
    return any(covers(measured.get(k)) for k in taken)


def _key(params: dict[str, Any]) -> tuple:
    """A candidate's identity: its Optuna params, sorted."""
    return tuple(sorted(params.items(), key=lambda kv: kv[0]))


def _beaten(propose: _Proposer, measure: Measure, references: dict[str, dict[str, Any]],
            families: list[frozenset[str] | None]) -> list[tuple]:
    """The point of each reference plan, measured; then, per family of knobs, the least
    damaging plan the model predicts within the reference's measured bytes and ``REFINE_STEP``
    under its measured time, proposed as a candidate."""
    teacher = float(propose.record["teacher_bytes"])
    points = [propose.point({tuple(k.rsplit(".", 1)): v for k, v in params.items() if not k.startswith("distill.")})
              for params in references.values()]
    measured = propose.measured(measure)
    for point in points:
        m = measured[point]
        if m is None or not m.get("latency_ratio"):
            continue
        faster = float(np.log(m["latency_ratio"][0] * (1 - REFINE_STEP)))
        for family in families:
            propose(family, "bytes", float(m["size_bytes"]) - teacher, cap=("latency", faster))
    return points


def _beating_picks(propose: _Proposer, measure: Measure, beaten: list[tuple], used: set,
                   level: int) -> list[Seed]:
    """Per reference, the least damaging candidate not already taken whose file is smaller and
    ``REFINE_STEP`` faster than the reference's, as a size seed whose limit is the reference's bytes."""
    out = []
    measured = propose.measured(measure)
    for point in beaten:
        ref = measured[point]
        if ref is None or not ref.get("latency_ratio"):
            continue
        beating = [k for k, m in measured.items() if m is not None and k not in used
                   and _spend(m, "bytes") < ref["size_bytes"]
                   and _spend(m, "latency") <= ref["latency_ratio"][0] * (1 - REFINE_STEP)
                   and not _redundant(m, measured, used)]
        if beating:
            pick = min(beating, key=lambda k: measured[k]["kl"])
            used.add(pick)
            out.append(propose.seed(pick, level + len(out), ("size", "bytes", float(ref["size_bytes"]), 0.0),
                                    measured[pick]))
    return out


def _spend(m: dict[str, Any] | None, key: str) -> float:
    """A measured candidate's bytes or latency ratio (inf when it has none)."""
    if m is None:
        return math.inf
    if key == "bytes":
        return float(m["size_bytes"])
    latency = m.get("latency_ratio")
    return float(latency[0]) if latency else math.inf


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
