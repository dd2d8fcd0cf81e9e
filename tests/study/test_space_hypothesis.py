"""Property-based: malformed and hostile YAML always gives the one-line error, never a traceback.

Also the converse: any space the validator accepts samples Plans the rest of autocomp accepts.
"""

from __future__ import annotations

import copy
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from autocomp.errors import AutocompError
from autocomp.models.zoo import LeNet5
from autocomp.study.space import (
    GLOBAL_KNOBS,
    LAYER_TYPES,
    SearchSpace,
    _Loader,
    layer_knobs,
    library,
    load_space,
    parse_space,
)

LAYER_KNOBS = layer_knobs()

SOURCE = "h.yaml"
BASE = yaml.safe_load(library()["default"].read_text(encoding="utf-8"))
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
optuna.logging.set_verbosity(optuna.logging.WARNING)


def outcome(text: str, source: str = SOURCE) -> SearchSpace | str:
    """The space, or the error line after checking its shape; any other exception fails the test."""
    try:
        return parse_space(text, source)
    except AutocompError as exc:
        return checked(str(exc), source)


def checked(message: str, source: str) -> str:
    assert len(message.splitlines()) == 1, message
    assert message.startswith(f"{source}: "), message
    assert len(message) <= 400 and "Traceback" not in message
    return message


# -- values of every YAML type, including the awkward ones ----------------------------------------
huge_ints = st.integers(min_value=20, max_value=4000).map(lambda k: 10**k) | st.integers()
floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([1e308, -1e-308, 5e-324])
scalars = (st.none() | st.booleans() | huge_ints | floats | st.text(max_size=30)
           | st.sampled_from(["Conv2d", "Linear", "null", "8", "", " ", "\u2028", "a\nb", "\x1c"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=12) | st.integers(), inner, max_size=4), max_leaves=12)


def dump(data: Any) -> str:
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=10_000)


@FAST
@given(values)
def test_any_yaml_document_gives_a_space_or_one_line(data: Any) -> None:
    outcome(dump(data))


@FAST
@given(st.text(max_size=300))
def test_any_text_gives_a_space_or_one_line(text: str) -> None:
    outcome(text)


def paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += paths(v, (*prefix, i))
    return out


def replace(data: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    data = copy.deepcopy(data)
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data


BASE_PATHS = paths(BASE)


@FAST
@given(st.sampled_from(BASE_PATHS), values)
def test_a_valid_space_with_one_value_swapped_gives_a_space_or_one_line(path: tuple, value: Any) -> None:
    outcome(dump(replace(BASE, path, value)))


ALLOWED = {*LAYER_KNOBS, *GLOBAL_KNOBS, "quant_mode", "name", "pattern", "regex", "type", "skip", "group",
           "version", "description", "layers", "default", "global", "constraints", "low", "high", "step", "log",
           "max_accuracy_drop", "max_size_bytes", "max_latency_ms"}


@FAST
@given(st.sampled_from([(), ("layers", 0), ("layers", 1), ("global",), ("constraints",), ("layers", 2, "sparsity")]),
       st.text(min_size=1, max_size=40) | st.integers(), values)
def test_an_unknown_key_anywhere_is_named(where: tuple, key: Any, value: Any) -> None:
    assume(key not in ALLOWED)
    node = copy.deepcopy(BASE)
    target = node
    for k in where:
        target = target[k]
    target[key] = value
    message = outcome(dump(node))
    assert isinstance(message, str) and "unknown key" in message, message
    # The key as autocomp's loader reads it back: '0E0' written plain is the float 0.0 (YAML 1.2 floats).
    read = next(iter(yaml.load(yaml.safe_dump({key: None}), Loader=_Loader)))  # noqa: S506 - SafeLoader subclass
    shown = " ".join(read.split())[:20] if isinstance(read, str) else str(read)[:20]
    assert shown in message, (key, message)


# -- numbers: huge, tiny, infinite, not a number -------------------------------------------------------
NUMERIC_SPOTS = [("global", "steps"), ("global", "temperature"), ("constraints", "max_size_bytes"),
                 ("constraints", "max_accuracy_drop"), ("layers", 1, "sparsity", "high"),
                 ("layers", 1, "sparsity", "step"), ("layers", 1, "bits", 1), ("version",)]
NUMBER_TEXT = (st.integers(min_value=1, max_value=6000).map(lambda k: "9" * k)
               | st.integers(min_value=1, max_value=6000).map(lambda k: "0x" + "f" * k)
               | st.sampled_from([".inf", "-.inf", ".nan", "1e999", "-1e999", "1e-999", "0b" + "1" * 5000,
                                  "1_000_000_000", "0o777", "-0", "1:20:30"]))


@FAST
@given(st.sampled_from(NUMERIC_SPOTS), NUMBER_TEXT)
def test_huge_and_odd_numbers_give_one_line(path: tuple, number: str) -> None:
    marker = "__NUMBER__"
    text = dump(replace(BASE, path, marker)).replace(marker, number)
    start = time.monotonic()
    result = outcome(text)
    assert time.monotonic() - start < 5
    if isinstance(result, str):
        assert "invalid YAML" in result or str(path[0]) in result, result


# -- anchors and aliases -----------------------------------------------------------------------------
def bomb(depth: int, width: int) -> str:
    """A flow list whose last item expands to width**depth leaves if anything copies aliases."""
    items = ["&x0 [1, 2]"] + [f"&x{i} [{', '.join([f'*x{i - 1}'] * width)}]" for i in range(1, depth + 1)]
    return "[" + ", ".join(items) + "]"


ALIAS_SPOTS = ["version: BOMB", "description: BOMB", "layers: BOMB", "layers:\n  - type: Conv2d\n    bits: BOMB",
               "layers:\n  - BOMB", "global:\n  steps: BOMB", "constraints: BOMB", "default: BOMB",
               "layers:\n  - type: Conv2d\n    <<: BOMB", "global:\n  lr: {low: BOMB, high: 0.1}"]


@FAST
@given(st.integers(1, 30), st.integers(1, 12), st.sampled_from(ALIAS_SPOTS))
def test_alias_bombs_are_refused_quickly(depth: int, width: int, spot: str) -> None:
    text = spot.replace("BOMB", bomb(depth, width))
    text = text if text.startswith("version") else "version: 1\n" + text
    start = time.monotonic()
    assert isinstance(outcome(text), str)
    assert time.monotonic() - start < 5


RECURSIVE = ["version: &a [*a]", "description: &a {x: *a}", "layers: &a [*a]", "layers:\n  - &a {name: x, bits: *a}",
             "global: &a {steps: *a}", "default: &a {bits: [*a]}", "constraints: &a {max_size_bytes: *a}",
             "layers:\n  - type: Conv2d\n    <<: &a {bits: *a}"]


@pytest.mark.parametrize("text", RECURSIVE)
def test_recursive_aliases_give_one_line(text: str) -> None:
    message = outcome("version: 1\n" + text if not text.startswith("version") else text)
    assert isinstance(message, str)


@pytest.mark.parametrize("text, problem", [
    ("version: 1\nlayers:\n  - type: Conv2d\n    bits: *nope\n", "undefined alias"),
    ("version: 1\nx: &s 8\nlayers:\n  - type: Conv2d\n    <<: *s\n", "line"),
    ("version: 1\nlayers:\n  - type: Conv2d\n    bits: &b [8]\n  - type: Linear\n    bits: *b\n    bits: [4]\n",
     "given twice"),
    ("version: !!python/object/apply:os.system ['true']\n", "constructor"),
    ("version: !!binary aGVsbG8=\n", "binary value"),
    ("version: 1\nlayers: !!set {a, b}\n", "must be a list"),
    ("version: 1\nlayers:\n  - ? [a, b]\n    : 1\n", "unhashable"),
])
def test_tags_and_alias_mistakes_give_one_line(text: str, problem: str) -> None:
    message = outcome(text)
    assert isinstance(message, str) and problem in message, message


def test_anchors_and_aliases_that_make_sense_still_work() -> None:
    s = outcome("version: 1\nlayers:\n  - type: Conv2d\n    bits: &b [null, 8]\n  - type: Linear\n    bits: *b\n")
    assert isinstance(s, SearchSpace) and s.rules[0].knobs == s.rules[1].knobs


# -- bytes on disk: non-UTF-8, BOMs, NULs -------------------------------------------------------------
@FAST
@given(st.binary(max_size=200) | st.builds(lambda a, b: a + b, st.just(b"version: 1\ndescription: "),
                                             st.binary(min_size=1, max_size=20)))
def test_any_bytes_on_disk_give_a_space_or_one_line(tmp_path_factory: pytest.TempPathFactory, raw: bytes) -> None:
    path = tmp_path_factory.mktemp("h") / "space.yaml"
    path.write_bytes(raw)
    try:
        load_space(str(path))
    except AutocompError as exc:
        checked(str(exc), str(path))


# -- the converse: what validates, samples Plans that autocomp accepts --------------------------------
def knob_text(kind: str, lo: float, hi: float) -> st.SearchStrategy[str]:
    if kind == "bits":
        return st.lists(st.sampled_from([None, 2, 3, 4, 5, 6, 7, 8]), min_size=1, max_size=5, unique=True).map(
            lambda xs: "[" + ", ".join("null" if x is None else str(x) for x in xs) + "]")
    if kind == "int":
        number = st.integers(int(lo), min(int(hi), 500))
        fixed = number.map(str)
        ranged = st.tuples(number, number).map(lambda t: f"{{low: {min(t)}, high: {max(t)}}}")
        return fixed | ranged
    number = st.floats(lo, hi, allow_nan=False)
    steps = st.sampled_from(["0.01", "0.02", "0.05", "0.1", "0.125", "0.25", "1", "2.5"]).map(Decimal)
    stepped = st.tuples(steps, st.integers(0, 40), st.integers(0, 40)).map(
        lambda t: (Decimal(str(lo)) + t[0] * t[1], Decimal(str(lo)) + t[0] * (t[1] + t[2]), t[0])).filter(
        lambda t: t[1] <= Decimal(str(hi)) and t[2] <= Decimal(str(hi))).map(  # a step is a value of the knob too
        lambda t: f"{{low: {t[0]}, high: {t[1]}, step: {t[2]}}}")
    choices = st.lists(number, min_size=1, max_size=4, unique=True).map(lambda xs: "[" + ", ".join(map(repr, xs)) + "]")
    return number.map(repr) | stepped | choices


@st.composite
def valid_spaces(draw: st.DrawFn) -> str:
    rules = []
    for _ in range(draw(st.integers(0, 4))):
        selector = draw(st.sampled_from([f"type: {t}" for t in LAYER_TYPES]
                                        + ["name: conv1", "name: fc2", "pattern: 'fc*'", "regex: 'conv\\d'"]))
        knobs = draw(st.lists(st.sampled_from(list(LAYER_KNOBS)), unique=True, min_size=1, max_size=4))
        body = "".join(f"\n    {k}: {draw(knob_text(*LAYER_KNOBS[k]))}" for k in knobs)
        rules.append(f"  - {selector}{body}")
    globals_ = draw(st.lists(st.sampled_from(list(GLOBAL_KNOBS)), unique=True, max_size=6))
    gl = "".join(f"\n  {k}: {draw(knob_text(*GLOBAL_KNOBS[k]))}" for k in globals_)
    return f"version: 1\nlayers:\n{chr(10).join(rules) if rules else '  []'}\nglobal:{gl or ' {}'}\n"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(valid_spaces(), st.integers(0, 1000))
def test_whatever_validates_samples_plans_autocomp_accepts(text: str, seed: int) -> None:
    s = outcome(text)
    assert isinstance(s, SearchSpace), (s, text)
    model = LeNet5()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    for _ in range(3):
        t = study.ask()
        plan = s.sample(t, model, frozenset({"fc2"}))  # LayerPlan / DistillPlan validate every value
        assert set(plan.layers) <= {"conv1", "conv2", "fc1", "fc2"}
        assert plan.layer("fc2").channel_ratio == 0.0
        study.tell(t, 0.0)


def test_the_shipped_spaces_survive_a_round_trip_through_yaml(tmp_path: Path) -> None:
    for name, path in library().items():
        again = tmp_path / f"{name}.yaml"
        again.write_text(dump(yaml.safe_load(path.read_text(encoding="utf-8"))), encoding="utf-8")
        a, b = load_space(str(path)), load_space(str(again))
        assert (a.rules, a.default, a.globals, a.constraints) == (b.rules, b.default, b.globals, b.constraints)
