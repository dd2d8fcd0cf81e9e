"""What a search space is: knobs' domains, rules that pick layers, constraints, and ``sample``.

``autocomp.study.space`` reads the YAML format into these (``load_space``, ``parse_space``).
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from autocomp.errors import AutocompError
from autocomp.methods.registry import knobs
from autocomp.models.layers import compute_layers
from autocomp.plan import DistillPlan, LayerPlan, Plan

VERSION = 1
SELECTORS = ("name", "pattern", "regex", "type")
GLOBAL_KNOBS = {  # knob -> (kind, lowest, highest); per-layer knobs come from the methods' registry
    "temperature": ("float", 0.5, 50.0),
    "alpha": ("float", 0.0, 1.0),
    "l1": ("float", 0.0, 1.0),
    "steps": ("int", 0, 1_000_000),
    "lr": ("float", 1e-7, 1.0),
    "batch_size": ("int", 1, 65536),
    "sparsity_ramp": ("float", 0.0, 0.95),
}
LAYER_TYPES = ("Conv2d", "DepthwiseConv2d", "PointwiseConv2d", "Linear")
CONSTRAINTS = ("max_accuracy_drop", "max_size_bytes", "max_latency_ms")
TOP_KEYS = ("version", "description", "layers", "default", "global", "constraints")
MAX_BYTES = 1_000_000  # a space is a page of YAML; refuse anything that could only be an accident
MAX_RULES = 1000
MAX_CHOICES = 64
MAX_GRID = 100_000  # points of a stepped range
HINTS = {  # keys users reach for that the format spells differently
    "epochs": "the fine-tune budget is `steps`, counted in optimizer steps so a trial costs the same on "
    "any dataset (one epoch = ceil(train samples / batch_size) steps)",
    "temp": "did you mean temperature?",
    "bitwidth": "did you mean bits?",
    "lambda": "did you mean l1?",
}


def layer_knobs() -> dict[str, tuple[str, float, float]]:
    """Per-layer knob -> (kind, lowest, highest), as the registered methods declare them."""
    return {name: (k.kind, k.low, k.high) for name, k in knobs().items()}


@dataclass(frozen=True)
class Domain:
    """The values one knob may take in a space: a fixed value, a list of choices, or a range."""

    fixed: Any = None
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    integer: bool = False

    def suggest(self, trial: Any, name: str) -> Any:
        """Ask ``trial`` for this knob's value under the parameter ``name``."""
        if self.choices is not None:
            return trial.suggest_categorical(name, list(self.choices))
        if self.low is None:
            return self.fixed
        if self.integer:
            return trial.suggest_int(name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)

    @property
    def searched(self) -> bool:
        return self.choices is not None and len(self.choices) > 1 or (self.low is not None and self.low < self.high)

    def offers(self, value: Any) -> bool:
        """``value`` is one of the choices, inside the range (its step aside) or the fixed value."""
        if self.choices is not None:
            return value in self.choices
        if self.low is None:
            return value == self.fixed
        return self.low <= value <= self.high


@dataclass(frozen=True)
class Rule:
    selector: str  # one of SELECTORS, or "default"
    value: str
    knobs: dict[str, Domain]
    skip: bool = False
    group: str | None = None
    index: int = 0  # position in the file, for first-match order and messages

    def matches(self, name: str, module: nn.Module) -> bool:
        if self.selector == "name":
            return name == self.value
        if self.selector == "pattern":
            return fnmatch.fnmatchcase(name, self.value)
        if self.selector == "regex":
            return re.fullmatch(self.value, name) is not None
        return layer_type_matches(self.value, module)

    @property
    def label(self) -> str:
        return "default" if self.selector == "default" else f"layers[{self.index}] ({self.selector}: {self.value})"


def layer_type_matches(kind: str, module: nn.Module) -> bool:
    """``Conv2d`` and ``Linear`` include subclasses; depthwise and pointwise are kinds of Conv2d."""
    if kind == "Linear":
        return isinstance(module, nn.Linear)
    if not isinstance(module, nn.Conv2d):
        return False
    if kind == "DepthwiseConv2d":
        return module.groups > 1 and module.groups == module.in_channels
    if kind == "PointwiseConv2d":
        return module.groups == 1 and tuple(module.kernel_size) == (1, 1)
    return kind == "Conv2d"


@dataclass(frozen=True)
class Constraints:
    max_accuracy_drop: float | None = None
    max_size_bytes: int | None = None
    max_latency_ms: float | None = None


@dataclass(frozen=True)
class Param:
    """One knob of one layer, and the trial parameter that decides it."""

    layer: str
    knob: str
    name: str  # ``layer.knob`` or ``group.knob``
    spec: Domain


@dataclass(frozen=True)
class SearchSpace:
    rules: tuple[Rule, ...] = ()
    default: Rule | None = None
    globals: dict[str, Domain] = field(default_factory=dict)
    quant_mode: str = "qat"
    constraints: Constraints = Constraints()
    description: str = ""
    source: str = "<space>"
    text: str = ""  # the YAML as loaded, stored on the study so report/export need no file
    # Trial parameter -> the values a study kept after timing them (``autocomp.study.costs``); not in the YAML.
    overrides: dict[str, Domain] = field(default_factory=dict)

    # -- resolution -------------------------------------------------------------------------
    def rule_for(self, name: str, module: nn.Module) -> Rule | None:
        """Precedence: exact name, then pattern/regex, then type, then default."""
        for level in (("name",), ("pattern", "regex"), ("type",)):
            for rule in self.rules:
                if rule.selector in level and rule.matches(name, module):
                    return rule
        return self.default

    def assignments(self, model: nn.Module) -> dict[str, Rule]:
        """``{layer: rule}`` for every compute layer a non-skip rule hits, in model order."""
        out = {}
        for name, module in compute_layers(model).items():
            rule = self.rule_for(name, module)
            if rule is not None and not rule.skip:
                out[name] = rule
        return out

    def hits(self, model: nn.Module) -> dict[int, list[str]]:
        """``{rule index: layers it decides}`` (skip rules included; the default is -1)."""
        out: dict[int, list[str]] = {r.index: [] for r in self.rules}
        for name, module in compute_layers(model).items():
            rule = self.rule_for(name, module)
            if rule is not None:
                out.setdefault(rule.index, []).append(name)
        return out

    def unused_rules(self, model: nn.Module) -> list[Rule]:
        """Rules that decide no layer of ``model`` (nothing matches, or a rule before them wins)."""
        hits = self.hits(model)
        return [r for r in self.rules if not hits[r.index]]

    def params(self, model: nn.Module, output_layers: frozenset[str] = frozenset()) -> list[Param]:
        """Every (layer, knob) the space sets on ``model``, with its trial parameter name."""
        layers = compute_layers(model)
        table = knobs()
        out = []
        for layer, rule in self.assignments(model).items():
            if rule.group in layers:
                raise AutocompError(f"{self.source}: {rule.label}.group: {rule.group!r} is also a layer name "
                                    "of the model; pick another group name")
            for knob_name, domain in rule.knobs.items():
                if layer in output_layers and not table[knob_name].on_output_layers:
                    continue  # e.g. the output layer keeps its classes
                name = f"{rule.group or layer}.{knob_name}"
                out.append(Param(layer, knob_name, name, self.overrides.get(name, domain)))
        return out

    def dimensions(self, model: nn.Module, output_layers: frozenset[str] = frozenset()) -> list[str]:
        """Names of the searched trial parameters (a group's knob counted once)."""
        names = dict.fromkeys(p.name for p in self.params(model, output_layers) if p.spec.searched)
        return [*names, *(f"distill.{k}" for k, v in self.globals.items() if v.searched)]

    # -- sampling ---------------------------------------------------------------------------
    def sample(self, trial: Any, model: nn.Module, output_layers: frozenset[str] = frozenset(), seed: int = 0) -> Plan:
        """One Plan: every knob asked of ``trial`` under its model-like name.

        Example::

            plan = load_space("default").sample(optuna.create_study().ask(), model)
        """
        values: dict[str, dict[str, Any]] = {}
        for p in self.params(model, output_layers):
            # Optuna hands back the value already sampled for a name: a group shares one value.
            values.setdefault(p.layer, {})[p.knob] = p.spec.suggest(trial, p.name)
        layers = {layer: LayerPlan(**v) for layer, v in values.items() if v}
        distill = {k: v.suggest(trial, f"distill.{k}") for k, v in self.globals.items()}
        return Plan(layers=layers, distill=DistillPlan(**distill), quant_mode=self.quant_mode, seed=seed)

    def fixed_distill(self) -> DistillPlan:
        """Distill settings with every searched knob at its midpoint (used by baselines)."""
        values = {}
        for k, knob in self.globals.items():
            if knob.choices is not None:
                values[k] = knob.choices[0]
            elif knob.low is not None:
                mid = math.sqrt(knob.low * knob.high) if knob.log else (knob.low + knob.high) / 2
                values[k] = int(round(mid)) if knob.integer else mid
            else:
                values[k] = knob.fixed
        return DistillPlan(**values)
