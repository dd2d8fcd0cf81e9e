"""Search spaces: a YAML file -> ``SearchSpace``; ``sample(trial)`` -> ``Plan``.

Format (version 1; the full reference with examples is ``docs/search_spaces.md``)::

    version: 1
    description: Mixed precision and pruning for any CNN.
    layers:                       # rules; which rule a layer takes is decided by precedence:
      - name: fc                  #   1. exact module name
        bits: [8]
      - pattern: "layer4.*"       #   2. glob (``pattern``) or regular expression (``regex``)
        bits: [8, 4]
        group: deep               #   layers a rule with ``group`` hits share one sampled value
      - type: Conv2d              #   3. layer type: Conv2d, DepthwiseConv2d, PointwiseConv2d, Linear
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
      steps: 100                  # fine-tune budget in optimizer steps (not epochs)
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

Every mistake in a file raises ``AutocompError`` with one line naming the file, the key and the
problem, e.g. ``my.yaml: layers[2].bits: bit widths are integers from 2 to 8 or null, got 16``.
"""

from __future__ import annotations

import difflib
import math
import re
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from autocomp.errors import AutocompError
from autocomp.methods.quantize import MODE_WORDS, QUANT_MODES
from autocomp.methods.registry import knobs
from autocomp.study.space_model import (
    CONSTRAINTS,
    GLOBAL_KNOBS,
    HINTS,
    LAYER_TYPES,
    MAX_BYTES,
    MAX_CHOICES,
    MAX_GRID,
    MAX_RULES,
    SELECTORS,
    TOP_KEYS,
    VERSION,
    Constraints,
    Domain,
    Param,
    Rule,
    SearchSpace,
    layer_knobs,
    layer_type_matches,
)

__all__ = ["Constraints", "Domain", "Param", "Rule", "SearchSpace", "layer_knobs", "layer_type_matches", "library",
           "library_dir", "load_space", "parse_space"]


# -- loading and validation ---------------------------------------------------------------------
def library_dir() -> Path:
    return Path(str(resources.files("autocomp.search_spaces")))


def library() -> dict[str, Path]:
    """Shipped spaces by name."""
    return {p.stem: p for p in sorted(library_dir().glob("*.yaml"))}


def load_space(name_or_path: str) -> SearchSpace:
    """A shipped space by name (``default``) or a YAML file path.

    Example::

        space = load_space("mixed_precision")
    """
    path = Path(name_or_path)
    if not path.is_file():
        shipped = library()
        if name_or_path not in shipped:
            what = "is a directory, not a file" if path.is_dir() else "is neither a file nor a shipped space"
            raise AutocompError(_line(f"search space {name_or_path!r} {what} (shipped: {', '.join(shipped)})"))
        path = shipped[name_or_path]
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise AutocompError(_line(f"{path}: cannot read ({exc.strerror})")) from None
    if len(raw) > MAX_BYTES:
        raise AutocompError(_line(f"{path}: {len(raw)} bytes is too large for a search space (at most {MAX_BYTES})"))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AutocompError(_line(f"{path}: not UTF-8 text (byte {exc.start})")) from None
    return parse_space(text, str(path))


class _Loader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice in one mapping (PyYAML keeps the last silently)
    and reads ``1e-4`` as a number (YAML 1.1, hence PyYAML, wants ``1.0e-4``)."""

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        # Checked before merge keys (``<<: *base``) are expanded: a key may override a merged one.
        if not getattr(node, "checked_for_duplicates", False):
            seen = set()
            for key_node, _ in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                    key = (key_node.tag, key_node.value)
                    if key in seen:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"key {_show(key_node.value)} given twice", key_node.start_mark)
                    seen.add(key)
            node.checked_for_duplicates = True
        super().flatten_mapping(node)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as exc:  # 2020-13-45 as a date, a 5000-digit integer
            raise yaml.constructor.ConstructorError(None, None, str(exc), node.start_mark) from None


_Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                              re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def parse_space(text: str, source: str = "<space>") -> SearchSpace:
    """Validate YAML text into a SearchSpace; any mistake is one ``AutocompError`` line."""
    if len(text) > MAX_BYTES:
        raise AutocompError(_line(f"{source}: {len(text)} characters is too large for a search space"))
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise AutocompError(_line(f"{source}: invalid YAML{where}: {problem}")) from None
    except RecursionError:
        raise AutocompError(_line(f"{source}: YAML nested too deeply")) from None
    return _Validator(source).space(data, text)


def _line(message: str, limit: int = 400) -> str:
    """One line: every line break (\\r, \\u2028, ...) folded to a space, and bounded."""
    line = " ".join(message.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _show(x: Any) -> str:
    """A short, safe description of a value a user wrote (never a huge or recursive repr)."""
    if x is None:
        return "null"
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, int):
        return str(x) if x.bit_length() <= 200 else f"a {x.bit_length()}-bit integer"
    if isinstance(x, float):
        return repr(x)
    if isinstance(x, str):
        return repr(x) if len(x) <= 40 else repr(x[:40]) + "..."
    if isinstance(x, (list, dict, set, tuple)):
        return f"a {_kind(x)} of {len(x)} item{'s' * (len(x) != 1)}"
    return f"a {_kind(x)}"


def _kind(value: Any) -> str:
    names = {type(None): "nothing", dict: "mapping", list: "list", str: "text", bool: "boolean",
             int: "integer", float: "number", bytes: "binary value", set: "set"}
    return names.get(type(value), type(value).__name__)


class _Validator:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, problem: str) -> None:
        where = f"{self.source}: {key}: " if key else f"{self.source}: "
        raise AutocompError(_line(where + problem))

    def keys(self, key: str, mapping: dict, allowed: tuple) -> None:
        for k in mapping:
            if k not in allowed:
                prefix = f"{key}." if key else ""
                shown = _line(k, 60) if isinstance(k, str) else _show(k)
                hint = HINTS.get(k) if isinstance(k, str) else None
                close = difflib.get_close_matches(k, allowed, n=1) if isinstance(k, str) and not hint else []
                hint = hint or (f"did you mean {close[0]}?" if close else f"expected one of {', '.join(allowed)}")
                self.fail(f"{prefix}{shown}", f"unknown key; {hint}")

    def space(self, data: Any, text: str) -> SearchSpace:
        if data is None:
            self.fail("", "empty file; a search space starts with `version: 1`")
        if not isinstance(data, dict):
            self.fail("", f"must be a mapping with keys {', '.join(TOP_KEYS)}, got {_show(data)}")
        self.keys("", data, TOP_KEYS)
        if "version" not in data:
            self.fail("version", f"missing; start the file with `version: {VERSION}`")
        version = data["version"]
        if not isinstance(version, int) or isinstance(version, bool) or version != VERSION:
            self.fail("version", f"must be {VERSION} (the only format version), got {_show(version)}")
        description = data.get("description") or ""
        if not isinstance(description, str):
            self.fail("description", f"must be text, got {_show(description)}")
        raw_rules = data.get("layers") or []
        if not isinstance(raw_rules, list):
            self.fail("layers", f"must be a list of rules (each starting with `- type:`, `- name:` ...), "
                                f"got {_show(raw_rules)}")
        if len(raw_rules) > MAX_RULES:
            self.fail("layers", f"{len(raw_rules)} rules; at most {MAX_RULES}")
        rules = tuple(self.rule(f"layers[{i}]", r, i) for i, r in enumerate(raw_rules))
        default = self.rule("default", data["default"], -1) if data.get("default") is not None else None
        raw_global = data.get("global") or {}
        if not isinstance(raw_global, dict):
            self.fail("global", f"must be a mapping, got {_show(raw_global)}")
        self.keys("global", raw_global, (*GLOBAL_KNOBS, "quant_mode"))
        quant_mode = raw_global.get("quant_mode", "qat")
        if not isinstance(quant_mode, str) or quant_mode not in QUANT_MODES:
            self.fail("global.quant_mode", f"must be {MODE_WORDS}, got {_show(quant_mode)}")
        globals_ = {k: self.knob(f"global.{k}", k, raw_global[k], GLOBAL_KNOBS) for k in GLOBAL_KNOBS
                    if k in raw_global}
        constraints = self.constraints(data.get("constraints") or {})
        groups: dict[str, Rule] = {}
        for rule in (*rules, *([default] if default else [])):
            if rule.group:
                first = groups.setdefault(rule.group, rule)
                if first.knobs != rule.knobs:
                    self.fail(f"{rule.label}.group", f"group {rule.group!r} is already given other knobs by "
                                                     f"{first.label}; layers of a group share identical knobs")
        return SearchSpace(rules, default, globals_, quant_mode, constraints, description, self.source, text)

    def rule(self, key: str, raw: Any, index: int) -> Rule:
        is_default = index < 0
        if not isinstance(raw, dict):
            self.fail(key, f"must be a mapping like {{type: Conv2d, bits: [null, 8]}}, got {_show(raw)}")
        table = layer_knobs()
        allowed = (*table, "skip", "group") + (() if is_default else SELECTORS)
        self.keys(key, raw, allowed)
        selector, value = "default", ""
        if not is_default:
            present = [s for s in SELECTORS if s in raw]
            if len(present) != 1:
                self.fail(key, f"needs exactly one selector of {', '.join(SELECTORS)}, got "
                               f"{', '.join(present) if present else 'none'}")
            selector, value = present[0], raw[present[0]]
            if not isinstance(value, str) or not value.strip():
                self.fail(f"{key}.{selector}", f"must be non-empty text, got {_show(value)}")
            if selector == "regex":
                try:
                    re.compile(value)
                except (re.error, OverflowError, RecursionError) as exc:
                    self.fail(f"{key}.regex", f"invalid regular expression: {exc}")
            if selector == "type" and value not in LAYER_TYPES:
                close = difflib.get_close_matches(value, LAYER_TYPES, n=1, cutoff=0.5)
                hint = f"; did you mean {close[0]}?" if close else ""
                self.fail(f"{key}.type", f"unknown layer type {_show(value)} (expected one of "
                                         f"{', '.join(LAYER_TYPES)}){hint}")
        skip = raw.get("skip", False)
        if not isinstance(skip, bool):
            self.fail(f"{key}.skip", f"must be true or false, got {_show(skip)}")
        group = raw.get("group")
        if group is not None and (not isinstance(group, str) or not re.fullmatch(r"[A-Za-z_][\w.-]{0,99}", group)
                                  or group == "distill"):
            self.fail(f"{key}.group", f"must be a name of letters, digits, '_', '.' or '-' (not 'distill'), "
                                      f"got {_show(group)}")
        domains = {k: self.knob(f"{key}.{k}", k, raw[k], table) for k in table if k in raw}
        if skip and (domains or group):
            self.fail(key, "a rule with `skip: true` cannot also set knobs or a group")
        if not skip and not domains:
            self.fail(key, f"sets no knob; give it some of {', '.join(table)}, or `skip: true`")
        return Rule(selector, value, domains, skip, group, index)

    def knob(self, key: str, name: str, raw: Any, table: dict) -> Domain:
        kind, lo, hi = table[name]
        if isinstance(raw, list):
            if not raw:
                self.fail(key, "empty list of choices")
            if len(raw) > MAX_CHOICES:
                self.fail(key, f"{len(raw)} choices; at most {MAX_CHOICES}")
            values = [self.choice(f"{key}[{i}]", name, kind, lo, hi, x) for i, x in enumerate(raw)]
            if len(set(values)) != len(values):
                self.fail(key, "choices repeat a value")
            return Domain(choices=tuple(values))
        if isinstance(raw, dict):
            if kind == "bits":
                self.fail(key, "bits take a list of choices like [null, 8, 4], not a range")
            return self.range(key, kind, lo, hi, raw)
        return Domain(fixed=self.choice(key, name, kind, lo, hi, raw))

    def choice(self, key: str, name: str, kind: str, lo: float, hi: float, x: Any) -> Any:
        """One value of a list (or a fixed value): a number, or a word the knob's config reads."""
        knob = knobs().get(name)  # None for a global setting (temperature, steps ...)
        if isinstance(x, str) and knob is not None and knob.words:
            try:
                return knob.config(x).value  # spelled one way, so two spellings never make two choices
            except AutocompError as exc:
                self.fail(key, str(exc))
        return self.value(key, kind, lo, hi, x)

    def range(self, key: str, kind: str, lo: float, hi: float, raw: dict) -> Domain:
        self.keys(key, raw, ("low", "high", "step", "log"))
        if "low" not in raw or "high" not in raw:
            self.fail(key, "a range needs low and high, like {low: 0.0, high: 0.9, step: 0.1}")
        low = self.value(f"{key}.low", kind, lo, hi, raw["low"])
        high = self.value(f"{key}.high", kind, lo, hi, raw["high"])
        if low > high:
            self.fail(key, f"empty range: low {low} > high {high}")
        log = raw.get("log", False)
        if not isinstance(log, bool):
            self.fail(f"{key}.log", f"must be true or false, got {_show(log)}")
        if log and low <= 0:
            self.fail(key, f"a log range needs low > 0, got {low}")
        step = raw.get("step")
        if step is not None:
            if log:
                self.fail(key, "step and log cannot be combined")
            step = self.value(f"{key}.step", kind, 0, hi, step)
            if step <= 0:
                self.fail(f"{key}.step", f"must be > 0, got {step}")
            points = (high - low) / step
            if points > MAX_GRID:
                self.fail(f"{key}.step", f"{step} makes {points:.3g} grid points; at most {MAX_GRID}")
            # Decimal, as Optuna checks it: otherwise Optuna silently lowers ``high``.
            if (Decimal(str(high)) - Decimal(str(low))) % Decimal(str(step)) != 0:
                self.fail(f"{key}.step", f"high - low ({high - low:g}) is not a multiple of step {step}")
        return Domain(low=low, high=high, step=step, log=log, integer=kind == "int")

    def value(self, key: str, kind: str, lo: float, hi: float, x: Any) -> Any:
        if kind == "bits":
            if x is None:
                return None
            if isinstance(x, bool) or not isinstance(x, int) or not lo <= x <= hi:
                self.fail(key, f"bit widths are integers from {lo} to {hi} or null, got {_show(x)}")
            return x
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            self.fail(key, f"must be a number, got {_show(x)}")
        if isinstance(x, float) and (math.isnan(x) or (kind == "int" and math.isfinite(x) and not x.is_integer())):
            self.fail(key, f"must be a {'whole ' if kind == 'int' else ''}number, got {_show(x)}")
        if not lo <= x <= hi:  # int/float comparison is exact, even for a 400-digit integer
            self.fail(key, f"must be from {lo:g} to {hi:g}, got {_show(x)}")
        return int(x) if kind == "int" else float(x)

    def constraints(self, raw: Any) -> Constraints:
        if not isinstance(raw, dict):
            self.fail("constraints", f"must be a mapping, got {_show(raw)}")
        self.keys("constraints", raw, CONSTRAINTS)
        values: dict[str, Any] = {}
        for key, low, high, kind, unit in (("max_accuracy_drop", 0.0, 100.0, float, "points of top-1"),
                                           ("max_size_bytes", 1, 10**15, int, "bytes"),
                                           ("max_latency_ms", 1e-6, 1e7, float, "ms")):
            x = raw.get(key)
            if x is None:
                continue
            if isinstance(x, bool) or not isinstance(x, (int, float)) or isinstance(x, float) and math.isnan(x):
                self.fail(f"constraints.{key}", f"must be a number of {unit}, got {_show(x)}")
            if kind is int and isinstance(x, float) and math.isfinite(x) and not x.is_integer():
                self.fail(f"constraints.{key}", f"must be a whole number of bytes, got {_show(x)}")
            if not low <= x <= high:
                self.fail(f"constraints.{key}", f"cannot be met: must be from {low:g} to {high:g} {unit}, "
                                                f"got {_show(x)}")
            values[key] = kind(x)
        return Constraints(**values)
