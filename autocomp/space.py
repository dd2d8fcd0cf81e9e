"""Search spaces: a YAML file -> ``SearchSpace``; ``sample(trial)`` -> ``Plan``.

Format (version 1)::

    version: 1
    description: Mixed precision and pruning for any CNN.
    layers:                       # rules; which rule a layer takes is decided by precedence:
      - name: fc                  #   1. exact module name
        bits: [8]
      - pattern: "layer4.*"       #   2. glob (``pattern``) or regular expression (``regex``)
        bits: [8, 4]
        group: deep               #   layers a rule with ``group`` hits share one sampled value
      - type: Conv2d              #   3. layer type: Conv2d, DepthwiseConv2d or Linear
        sparsity: {low: 0.0, high: 0.9, step: 0.1}
        channel_ratio: {low: 0.0, high: 0.5, step: 0.125}
        bits: [null, 8, 4]        #   null = keep float32
        rank: [1.0, 0.5, 0.25]
      - name: conv1
        skip: true                # never compressed
    default:                      # 4. layers no rule hits (omit: they are left alone)
      bits: [null, 8]
    global:
      temperature: {low: 1.0, high: 8.0}
      alpha: {low: 0.2, high: 0.9}
      l1: 0.0                     # or {low: 1.0e-7, high: 1.0e-4, log: true}
      steps: 100
      lr: 0.001
      batch_size: 64
      quant_mode: qat             # qat | ptq | dynamic
    constraints:
      max_accuracy_drop: 2.0      # points of top-1 below the teacher
      max_size_bytes: null
      max_latency_ms: null

Within one precedence level the first rule in the file wins. A knob is a fixed value, a list
of choices, or a range ``{low, high, step?, log?}``; a knob a rule omits is not searched.
Trial parameters are named like the model: ``layer4.1.conv2.bits`` (or ``GROUP.bits``), and
``distill.temperature`` for the global knobs.
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from autocomp.errors import AutocompError
from autocomp.methods.registry import compute_layers
from autocomp.plan import DistillPlan, LayerPlan, Plan

VERSION = 1
SELECTORS = ("name", "pattern", "regex", "type")
LAYER_KNOBS = {  # knob -> (kind, lowest, highest)
    "sparsity": ("float", 0.0, 0.98),
    "channel_ratio": ("float", 0.0, 0.9),
    "bits": ("bits", 2, 8),
    "rank": ("float", 0.01, 1.0),
}
GLOBAL_KNOBS = {
    "temperature": ("float", 0.5, 50.0),
    "alpha": ("float", 0.0, 1.0),
    "l1": ("float", 0.0, 1.0),
    "steps": ("int", 0, 1_000_000),
    "lr": ("float", 1e-7, 1.0),
    "batch_size": ("int", 1, 65536),
}
LAYER_TYPES = ("Conv2d", "DepthwiseConv2d", "Linear")
CONSTRAINTS = ("max_accuracy_drop", "max_size_bytes", "max_latency_ms")
TOP_KEYS = ("version", "description", "layers", "default", "global", "constraints")


@dataclass(frozen=True)
class Knob:
    """A fixed value, a list of choices, or a numeric range."""

    fixed: Any = None
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    integer: bool = False

    def suggest(self, trial: Any, name: str) -> Any:
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


@dataclass(frozen=True)
class Rule:
    selector: str  # one of SELECTORS
    value: str
    knobs: dict[str, Knob]
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
        if self.value == "DepthwiseConv2d":
            return isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels
        return type(module).__name__ == self.value

    @property
    def label(self) -> str:
        return f"layers[{self.index}] ({self.selector}: {self.value})"


@dataclass(frozen=True)
class Constraints:
    max_accuracy_drop: float | None = None
    max_size_bytes: int | None = None
    max_latency_ms: float | None = None


@dataclass(frozen=True)
class SearchSpace:
    rules: tuple[Rule, ...] = ()
    default: Rule | None = None
    globals: dict[str, Knob] = field(default_factory=dict)
    quant_mode: str = "qat"
    constraints: Constraints = Constraints()
    description: str = ""
    source: str = "<space>"
    text: str = ""  # the YAML as loaded, stored on the study so report/export need no file

    # -- resolution -------------------------------------------------------------------------
    def rule_for(self, name: str, module: nn.Module) -> Rule | None:
        """Precedence: exact name, then pattern/regex, then type, then default."""
        for level in (("name",), ("pattern", "regex"), ("type",)):
            for rule in self.rules:
                if rule.selector in level and rule.matches(name, module):
                    return rule
        return self.default

    def assignments(self, model: nn.Module, output_layers: frozenset[str] = frozenset()) -> dict[str, Rule]:
        """``{layer: rule}`` for every compute layer a non-skip rule hits, in model order."""
        out = {}
        for name, module in compute_layers(model).items():
            rule = self.rule_for(name, module)
            if rule is not None and not rule.skip:
                out[name] = rule
        return out

    def unused_rules(self, model: nn.Module) -> list[Rule]:
        layers = compute_layers(model)
        used = {id(self.rule_for(n, m)) for n, m in layers.items()}
        return [r for r in self.rules if id(r) not in used]

    def dimensions(self, model: nn.Module, output_layers: frozenset[str] = frozenset()) -> list[str]:
        """Names of the searched trial parameters (shared group knobs counted once)."""
        names: list[str] = []
        for layer, rule in self.assignments(model).items():
            for knob_name, knob in rule.knobs.items():
                if knob_name == "channel_ratio" and layer in output_layers:
                    continue
                pname = f"{rule.group or layer}.{knob_name}"
                if knob.searched and pname not in names:
                    names.append(pname)
        names += [f"distill.{k}" for k, v in self.globals.items() if v.searched]
        return names

    # -- sampling ---------------------------------------------------------------------------
    def sample(self, trial: Any, model: nn.Module, output_layers: frozenset[str] = frozenset(), seed: int = 0) -> Plan:
        layers: dict[str, LayerPlan] = {}
        for layer, rule in self.assignments(model).items():
            values = {}
            for knob_name, knob in rule.knobs.items():
                if knob_name == "channel_ratio" and layer in output_layers:
                    continue  # the output layer keeps its classes
                values[knob_name] = knob.suggest(trial, f"{rule.group or layer}.{knob_name}")
            if values:
                layers[layer] = LayerPlan(**values)
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


# -- loading and validation ---------------------------------------------------------------------
def library_dir() -> Path:
    return Path(str(resources.files("autocomp.search_spaces")))


def library() -> dict[str, Path]:
    """Shipped spaces by name."""
    return {p.stem: p for p in sorted(library_dir().glob("*.yaml"))}


def load_space(name_or_path: str) -> SearchSpace:
    """A shipped space by name (``default``) or a YAML file path."""
    path = Path(name_or_path)
    if not path.is_file():
        shipped = library()
        if name_or_path not in shipped:
            raise AutocompError(
                f"search space {name_or_path!r} is neither a file nor a shipped space ({', '.join(shipped)})"
            )
        path = shipped[name_or_path]
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AutocompError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise AutocompError(f"{path}: cannot read ({exc.strerror})") from None
    return parse_space(text, str(path))


def parse_space(text: str, source: str = "<space>") -> SearchSpace:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise AutocompError(f"{source}: invalid YAML{where}: {problem}") from None
    except RecursionError:
        raise AutocompError(f"{source}: YAML nested too deeply") from None
    v = _Validator(source)
    if not isinstance(data, dict):
        v.fail("", f"must be a mapping with {', '.join(TOP_KEYS)}, got {_kind(data)}")
    v.keys("", data, TOP_KEYS)
    version = data.get("version", None)
    if version != VERSION or isinstance(version, bool):
        v.fail("version", f"must be {VERSION}, got {version!r}")
    description = data.get("description", "") or ""
    if not isinstance(description, str):
        v.fail("description", f"must be text, got {_kind(description)}")
    raw_rules = data.get("layers", []) or []
    if not isinstance(raw_rules, list):
        v.fail("layers", f"must be a list of rules, got {_kind(raw_rules)}")
    rules = tuple(v.rule(f"layers[{i}]", r, i) for i, r in enumerate(raw_rules))
    default = None
    if data.get("default") is not None:
        default = v.rule("default", data["default"], -1, is_default=True)
    raw_global = data.get("global", {}) or {}
    if not isinstance(raw_global, dict):
        v.fail("global", f"must be a mapping, got {_kind(raw_global)}")
    v.keys("global", raw_global, (*GLOBAL_KNOBS, "quant_mode"))
    quant_mode = raw_global.get("quant_mode", "qat")
    if quant_mode not in ("qat", "ptq", "dynamic"):
        v.fail("global.quant_mode", f"must be qat, ptq or dynamic, got {quant_mode!r}")
    globals_ = {k: v.knob(f"global.{k}", k, raw_global[k], GLOBAL_KNOBS) for k in GLOBAL_KNOBS if k in raw_global}
    constraints = v.constraints(data.get("constraints", {}) or {})
    groups: dict[str, dict] = {}
    for rule in rules:
        if rule.group:
            knobs = groups.setdefault(rule.group, rule.knobs)
            if knobs != rule.knobs:
                v.fail(f"{rule.label}.group", f"group {rule.group!r} is given different knobs by two rules")
    return SearchSpace(rules, default, globals_, quant_mode, constraints, description, source, text)


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


class _Validator:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, problem: str) -> None:
        where = f"{self.source}: {key}: " if key else f"{self.source}: "
        raise AutocompError((where + problem).replace("\n", " ")[:400])

    def keys(self, key: str, mapping: dict, allowed: tuple) -> None:
        for k in mapping:
            if k not in allowed:
                prefix = f"{key}." if key else ""
                self.fail(f"{prefix}{k}", f"unknown key (expected one of {', '.join(allowed)})")

    def rule(self, key: str, raw: Any, index: int, is_default: bool = False) -> Rule:
        if not isinstance(raw, dict):
            self.fail(key, f"must be a mapping, got {_kind(raw)}")
        allowed = (*LAYER_KNOBS, "skip", "group") + (() if is_default else SELECTORS)
        self.keys(key, raw, allowed)
        selector, value = "default", ""
        if not is_default:
            present = [s for s in SELECTORS if s in raw]
            if len(present) != 1:
                self.fail(key, f"needs exactly one selector of {', '.join(SELECTORS)}, got {len(present)}")
            selector, value = present[0], raw[present[0]]
            if not isinstance(value, str) or not value:
                self.fail(f"{key}.{selector}", f"must be non-empty text, got {_kind(value)}")
            if selector == "regex":
                try:
                    re.compile(value)
                except re.error as exc:
                    self.fail(f"{key}.regex", f"invalid regular expression: {exc}")
            if selector == "type" and value not in LAYER_TYPES:
                self.fail(f"{key}.type", f"unknown layer type {value!r} (expected {', '.join(LAYER_TYPES)})")
        skip = raw.get("skip", False)
        if not isinstance(skip, bool):
            self.fail(f"{key}.skip", f"must be true or false, got {_kind(skip)}")
        group = raw.get("group")
        if group is not None and (not isinstance(group, str) or not group or group == "distill"):
            self.fail(f"{key}.group", "must be a non-empty name other than 'distill'")
        knobs = {k: self.knob(f"{key}.{k}", k, raw[k], LAYER_KNOBS) for k in LAYER_KNOBS if k in raw}
        if skip and knobs:
            self.fail(key, "a skipped rule cannot also set knobs")
        return Rule(selector, value, knobs, skip, group, index)

    def knob(self, key: str, name: str, raw: Any, table: dict) -> Knob:
        kind, lo, hi = table[name]
        if isinstance(raw, list):
            if not raw:
                self.fail(key, "empty list of choices")
            if len(raw) > 64:
                self.fail(key, f"{len(raw)} choices; at most 64")
            values = [self.value(key, kind, lo, hi, x) for x in raw]
            if len(set(map(repr, values))) != len(values):
                self.fail(key, "choices repeat a value")
            return Knob(choices=tuple(values))
        if isinstance(raw, dict):
            if kind == "bits":
                self.fail(key, "bits take a list of choices like [null, 8, 4], not a range")
            self.keys(key, raw, ("low", "high", "step", "log"))
            if "low" not in raw or "high" not in raw:
                self.fail(key, "a range needs low and high")
            low = self.value(f"{key}.low", kind, lo, hi, raw["low"])
            high = self.value(f"{key}.high", kind, lo, hi, raw["high"])
            if low > high:
                self.fail(key, f"empty range: low {low} > high {high}")
            log = raw.get("log", False)
            if not isinstance(log, bool):
                self.fail(f"{key}.log", f"must be true or false, got {_kind(log)}")
            step = raw.get("step")
            if step is not None:
                step = self.value(f"{key}.step", "int" if kind == "int" else "float", 0, hi - lo if high > low else hi, step)
                if step <= 0:
                    self.fail(f"{key}.step", "must be > 0")
                if log:
                    self.fail(key, "step and log cannot be combined")
            if log and low <= 0:
                self.fail(key, "a log range needs low > 0")
            return Knob(low=low, high=high, step=step, log=log, integer=kind == "int")
        return Knob(fixed=self.value(key, kind, lo, hi, raw))

    def value(self, key: str, kind: str, lo: float, hi: float, x: Any) -> Any:
        if kind == "bits":
            if x is None:
                return None
            if isinstance(x, bool) or not isinstance(x, int) or not lo <= x <= hi:
                self.fail(key, f"bit widths are integers from {lo} to {hi} or null, got {x!r}")
            return x
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            self.fail(key, f"must be a number, got {_kind(x)}")
        if kind == "int" and not float(x).is_integer():
            self.fail(key, f"must be a whole number, got {x!r}")
        if not math.isfinite(x) or not lo <= x <= hi:
            self.fail(key, f"must be between {lo} and {hi}, got {x!r}")
        return int(x) if kind == "int" else float(x)

    def constraints(self, raw: Any) -> Constraints:
        if not isinstance(raw, dict):
            self.fail("constraints", f"must be a mapping, got {_kind(raw)}")
        self.keys("constraints", raw, CONSTRAINTS)
        values = {}
        for key, hi, kind in (("max_accuracy_drop", 100.0, "float"), ("max_size_bytes", 1e15, "int"),
                              ("max_latency_ms", 1e7, "float")):
            x = raw.get(key)
            if x is None:
                continue
            low = 0.0 if key == "max_accuracy_drop" else 1e-9
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or not low <= x <= hi:
                self.fail(f"constraints.{key}", f"cannot be met: must be a number from {low:g} to {hi:g}, got {x!r}")
            values[key] = int(x) if kind == "int" else float(x)
        return Constraints(**values)
