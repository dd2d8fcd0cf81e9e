"""Search spaces: format, precedence, groups, parameter names, validation, the shipped library."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import optuna
import pytest
import torch
from tiny_models import TinyResidual
from torch import nn

import autocomp.study.space as space_mod
from autocomp.data import DataBundle
from autocomp.errors import AutocompError
from autocomp.methods.registry import knobs
from autocomp.models.zoo import LeNet5, build_model
from autocomp.plan import Plan
from autocomp.study.records import study_attr
from autocomp.study.space import Constraints, Domain, SearchSpace, library, load_space, parse_space

ROOT = Path(__file__).resolve().parents[2]
KNOBS = tuple(knobs())
optuna.logging.set_verbosity(optuna.logging.WARNING)


def trial(seed: int = 0) -> optuna.Trial:
    return optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed)).ask()


def space(body: str) -> SearchSpace:
    return parse_space("version: 1\n" + body, "s.yaml")


def error(text: str, source: str = "s.yaml") -> str:
    with pytest.raises(AutocompError) as info:
        parse_space(text, source)
    message = str(info.value)
    assert len(message.splitlines()) == 1 and message.startswith(f"{source}: "), message
    return message


# -- precedence ----------------------------------------------------------------------------------
def test_precedence_is_exact_then_pattern_then_type_then_default() -> None:
    s = space("""
layers:
  - type: Conv2d
    bits: [4]
  - pattern: "conv*"
    bits: [6]
  - name: conv1
    bits: [8]
  - regex: "fc\\\\d"
    bits: [2]
default:
  bits: [5]
""")
    model = LeNet5()
    picked = {n: s.rule_for(n, m) for n, m in model.named_modules() if n}
    assert picked["conv1"].selector == "name"  # exact beats the pattern and the type listed before it
    assert picked["conv2"].selector == "pattern"  # pattern beats type
    assert picked["fc1"].selector == "regex" and picked["fc2"].selector == "regex"
    s2 = space("layers:\n  - type: Linear\n    bits: [4]\ndefault:\n  bits: [5]\n")
    assert s2.rule_for("conv1", model.conv1).selector == "default"
    assert space("layers: []").rule_for("conv1", model.conv1) is None


def test_first_rule_in_file_wins_within_a_level_and_check_names_the_shadow() -> None:
    s = space("""
layers:
  - pattern: "fc*"
    bits: [8]
  - regex: "fc1"
    bits: [4]
""")
    model = LeNet5()
    assert s.rule_for("fc1", model.fc1).index == 0
    assert [r.index for r in s.unused_rules(model)] == [1]


def test_layer_types_cover_depthwise_pointwise_and_subclasses() -> None:
    class MyConv(nn.Conv2d):
        pass

    dw, pw, conv, sub = nn.Conv2d(8, 8, 3, groups=8), nn.Conv2d(8, 16, 1), nn.Conv2d(8, 8, 3), MyConv(3, 4, 3)
    match = space_mod.layer_type_matches
    assert match("DepthwiseConv2d", dw) and not match("DepthwiseConv2d", conv) and not match("DepthwiseConv2d", pw)
    assert match("PointwiseConv2d", pw) and not match("PointwiseConv2d", conv) and not match("PointwiseConv2d", dw)
    assert all(match("Conv2d", m) for m in (dw, pw, conv, sub))
    assert match("Linear", nn.Linear(2, 2)) and not match("Linear", conv)


def test_skip_leaves_a_layer_alone_even_under_a_default() -> None:
    s = space("layers:\n  - name: conv1\n    skip: true\ndefault:\n  bits: [8]\n")
    plan = s.sample(trial(), LeNet5())
    assert "conv1" not in plan.layers and set(plan.layers) == {"conv2", "fc1", "fc2"}


# -- sampling, names, groups ---------------------------------------------------------------------
def test_parameter_names_read_like_the_model() -> None:
    model = TinyResidual()
    s = load_space("default")
    t = trial()
    plan = s.sample(t, model, frozenset({"head"}))
    layer_names = {n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    for name in t.params:
        layer, _, knob = name.rpartition(".")
        assert (layer in layer_names and knob in KNOBS) or (layer == "distill"), name
    assert "dw.bits" in t.params and "dw.sparsity" not in t.params  # depthwise: bits only
    assert "head.channel_ratio" not in t.params  # the output layer keeps its classes
    assert "stem.0.rank" in t.params and "distill.temperature" in t.params
    assert sorted(s.dimensions(model, frozenset({"head"}))) == sorted(t.params)
    assert plan.layers["stem.0"].rank == t.params["stem.0.rank"]


def test_group_shares_one_sampled_value_under_one_parameter() -> None:
    s = space("""
layers:
  - name: fc1
    bits: [null, 8, 4, 2]
    sparsity: {low: 0.0, high: 0.9, step: 0.1}
    group: head
  - name: fc2
    bits: [null, 8, 4, 2]
    sparsity: {low: 0.0, high: 0.9, step: 0.1}
    group: head
  - type: Conv2d
    bits: [null, 8, 4, 2]
""")
    model = LeNet5()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(30):
        t = study.ask()
        plan = s.sample(t, model)
        assert plan.layers["fc1"] == plan.layers["fc2"]
        assert {"head.bits", "head.sparsity", "conv1.bits", "conv2.bits"} == set(t.params)
        assert plan.layers["fc1"].bits == t.params["head.bits"]
        seen.add(plan.layers["fc1"].bits)
        study.tell(t, 0.0)
    assert len(seen) > 1  # the shared value does vary between trials
    assert s.dimensions(model) == ["conv1.bits", "conv2.bits", "head.sparsity", "head.bits"]  # model order


def test_group_with_a_layer_name_is_refused_at_sampling() -> None:
    s = space("layers:\n  - type: Linear\n    bits: [4, 8]\n    group: fc1\n")
    with pytest.raises(AutocompError, match=r"group: 'fc1' is also a layer name"):
        s.sample(trial(), LeNet5())


def test_fixed_values_are_not_searched_but_applied() -> None:
    s = space("layers:\n  - type: Linear\n    bits: 8\n    sparsity: 0.5\nglobal:\n  steps: 7\n")
    t = trial()
    plan = s.sample(t, LeNet5())
    assert t.params == {} and s.dimensions(LeNet5()) == []
    assert plan.layers["fc1"].bits == 8 and plan.layers["fc1"].sparsity == 0.5 and plan.distill.steps == 7


def test_ranges_respect_step_and_log_and_integers() -> None:
    s = space("""
layers:
  - type: Conv2d
    sparsity: {low: 0.1, high: 0.5, step: 0.2}
global:
  lr: {low: 1.0e-5, high: 1.0e-2, log: true}
  steps: {low: 10, high: 50, step: 20}
""")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        t = study.ask()
        plan = s.sample(t, LeNet5())
        assert min(abs(plan.layers["conv1"].sparsity - v) for v in (0.1, 0.3, 0.5)) < 1e-9
        assert plan.distill.steps in (10, 30, 50) and 1e-5 <= plan.distill.lr <= 1e-2
        study.tell(t, 0.0)


def test_fixed_distill_takes_midpoints() -> None:
    s = space("global:\n  temperature: {low: 2.0, high: 6.0}\n  lr: {low: 1.0e-4, high: 1.0e-2, log: true}\n"
              "  steps: {low: 10, high: 21}\n  batch_size: [32, 64]\n")
    d = s.fixed_distill()
    assert d.temperature == 4.0 and d.lr == pytest.approx(1e-3) and d.steps == 16 and d.batch_size == 32


# -- validation: one line naming file, key and problem ---------------------------------------------
@pytest.mark.parametrize("text, key, problem", [
    ("version: 1\nlayerz: []\n", "layerz", "did you mean layers"),
    ("version: 1\nlayers:\n  - type: Conv2d\n    sparsty: 0.5\n", "layers[0].sparsty", "did you mean sparsity"),
    ("version: 1\nglobal:\n  epochs: 3\n", "global.epochs", "optimizer steps"),
    ("version: 1\nlayers:\n  - type: Conv2d\n    bits: 8\n    bits: 4\n", "line 5", "'bits' given twice"),
    ("version: 1\nlayers: {type: Conv2d}\n", "layers", "must be a list"),
    ("version: 1\nlayers:\n  - type: Conv2d\n    bits: eight\n", "layers[0].bits", "bit widths are integers"),
    ("version: 1\nlayers:\n  - type: Conv2d\n    bits: [8, 16]\n", "layers[0].bits[1]", "got 16"),
    ("version: 1\nlayers:\n  - type: Conv2d\n    bits: {low: 2, high: 8}\n", "layers[0].bits", "not a range"),
    ("version: 1\nlayers:\n  - type: Conv2d\n    sparsity: {low: 0.8, high: 0.2}\n", "layers[0].sparsity",
     "empty range"),
    ("version: 1\nlayers:\n  - type: Conv2d\n    sparsity: []\n", "layers[0].sparsity", "empty list"),
    ("version: 1\nlayers:\n  - type: Conv2d\n    sparsity: {low: 0.0, high: 0.95, step: 0.1}\n",
     "layers[0].sparsity.step", "not a multiple of step"),
    ("version: 1\nlayers:\n  - type: Conv2d\n    sparsity: {low: 0.0, high: 0.9, step: 1.0e-9}\n",
     "layers[0].sparsity.step", "grid points"),
    ("version: 1\nlayers:\n  - type: Conv2d\n    sparsity: 1.5\n", "layers[0].sparsity", "from 0 to 0.98"),
    ("version: 1\nlayers:\n  - type: Conv2d\n    rank: [1.0, 1.0]\n", "layers[0].rank", "repeat"),
    ("version: 1\nlayers:\n  - type: Conv2\n    bits: [8]\n", "layers[0].type", "did you mean Conv2d"),
    ("version: 1\nlayers:\n  - type: LSTM\n    bits: [8]\n", "layers[0].type", "unknown layer type 'LSTM'"),
    ("version: 1\nlayers:\n  - bits: [8]\n", "layers[0]", "needs exactly one selector"),
    ("version: 1\nlayers:\n  - name: a\n    type: Linear\n", "layers[0]", "got name, type"),
    ("version: 1\nlayers:\n  - name: a\n", "layers[0]", "sets no knob"),
    ("version: 1\ndefault: {}\n", "default", "sets no knob"),
    ("version: 1\nlayers:\n  - regex: '(unclosed'\n    bits: [8]\n", "layers[0].regex", "invalid regular"),
    ("version: 1\nlayers:\n  - name: conv1\n    skip: true\n    bits: [8]\n", "layers[0]", "cannot also set"),
    ("version: 1\nlayers:\n  - name: conv1\n    skip: yes please\n", "layers[0].skip", "true or false"),
    ("version: 1\nlayers:\n  - name: a\n    bits: [8]\n    group: g\n  - name: b\n    bits: [4]\n    group: g\n",
     "layers[1] (name: b).group", "already given other knobs by layers[0]"),
    ("version: 1\nlayers:\n  - name: a\n    bits: [8]\n    group: distill\n", "layers[0].group", "not 'distill'"),
    ("version: 1\nglobal:\n  alpha: 1.5\n", "global.alpha", "from 0 to 1"),
    ("version: 1\nglobal:\n  steps: 2.5\n", "global.steps", "whole number"),
    ("version: 1\nglobal:\n  lr: {low: 0.0, high: 0.1, log: true}\n", "global.lr", "from 1e-07"),
    ("version: 1\nglobal:\n  l1: {low: 0.0, high: 0.1, log: true}\n", "global.l1", "log range needs low > 0"),
    ("version: 1\nglobal:\n  quant_mode: int8\n", "global.quant_mode", "qat, ptq or dynamic"),
    ("version: 1\nglobal:\n  sparsity_ramp: 0.99\n", "global.sparsity_ramp", "from 0 to 0.95"),
    ("version: 1\nconstraints:\n  max_accuracy_drop: -1\n", "constraints.max_accuracy_drop", "cannot be met"),
    ("version: 1\nconstraints:\n  max_size_bytes: 0\n", "constraints.max_size_bytes", "cannot be met"),
    ("version: 1\nconstraints:\n  max_latency_ms: .inf\n", "constraints.max_latency_ms", "cannot be met"),
    ("version: 1\nconstraints:\n  max_size: 1000\n", "constraints.max_size", "did you mean max_size_bytes"),
    ("version: 2\n", "version", "must be 1"),
    ("layers: []\n", "version", "missing"),
    ("", "", "empty file"),
    ("- a\n- b\n", "", "must be a mapping"),
    ("version: [1\n", "line 2", "invalid YAML"),
    ("version: 1\ndescription: 2020-13-45\n", "line 2", "month must be in 1..12"),
])
def test_mistakes_give_one_line_naming_file_key_and_problem(text: str, key: str, problem: str) -> None:
    message = error(text)
    assert key in message and problem in message, message


def test_load_space_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"version: 1\ndescription: caf\xe9\n")
    with pytest.raises(AutocompError, match=r"latin1.yaml: not UTF-8 text \(byte 27\)"):
        load_space(str(bad))
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (space_mod.MAX_BYTES + 1))
    with pytest.raises(AutocompError, match="too large for a search space"):
        load_space(str(big))
    with pytest.raises(AutocompError, match="neither a file nor a shipped space .*default"):
        load_space(str(tmp_path / "missing.yaml"))
    with pytest.raises(AutocompError, match="is a directory"):
        load_space(str(tmp_path))


def test_anchors_and_merge_keys_share_knob_definitions() -> None:
    s = space("""
layers:
  - type: Conv2d
    <<: &shared {bits: [null, 8], sparsity: {low: 0.0, high: 0.5, step: 0.25}}
  - type: Linear
    <<: *shared
    rank: [1.0, 0.5]
""")
    assert s.rules[0].knobs == {k: v for k, v in s.rules[1].knobs.items() if k != "rank"}
    assert s.rules[1].knobs["rank"] == Domain(choices=(1.0, 0.5))


# -- documentation examples are valid -----------------------------------------------------------------
def test_module_docstring_example_parses() -> None:
    block = space_mod.__doc__.split("::\n", 1)[1].split("\n\n")[0]
    s = parse_space(re.sub(r"^    ", "", block, flags=re.M), "docstring")
    assert s.rules[1].group == "deep" and s.constraints.max_accuracy_drop == 2.0


def test_every_yaml_example_in_the_docs_parses() -> None:
    doc = (ROOT / "docs" / "search_spaces.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", doc, flags=re.S)
    assert len(blocks) >= 5
    model = LeNet5()
    for i, block in enumerate(blocks):
        s = parse_space(block, f"docs block {i}")
        s.sample(trial(), model, frozenset({"fc2"}))  # and every one samples a valid Plan


# -- the shipped library --------------------------------------------------------------------------
SHIPPED = sorted(library())


def test_library_has_the_spaces_practitioners_reach_for() -> None:
    assert {"default", "mixed_precision", "pruning", "low_rank", "edge", "uniform"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_space_has_a_header_and_loads(name: str) -> None:
    path = library()[name]
    text = path.read_text(encoding="utf-8")
    assert text.startswith(f"# {name}: ") and "# Use when:" in text.split("version:")[0]
    s = load_space(name)
    assert s.description and s.constraints.max_accuracy_drop is not None
    assert not [r for r in s.rules if r.selector in ("name", "pattern", "regex")]  # model-agnostic


def synthetic(shape: tuple[int, ...], n_train: int = 64, n_val: int = 32) -> DataBundle:
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (n_train + n_val,), generator=gen)
    x = torch.randn(n_train + n_val, *shape, generator=gen) * 0.3
    x[torch.arange(len(y)), 0, y, y] += 2.0  # learnable enough that a trial has a real accuracy
    return DataBundle(x[:n_train], y[:n_train], x[n_train:], y[n_train:], 10, [0.0] * shape[0], [1.0] * shape[0])


def quick(s: SearchSpace) -> SearchSpace:
    """The same space with a two-step fine-tune and no constraints (the teacher is untrained)."""
    return dataclasses.replace(s, globals={**s.globals, "steps": Domain(fixed=min(2, _steps(s))),
                                           "batch_size": Domain(fixed=16)}, constraints=Constraints())


def _steps(s: SearchSpace) -> int:
    knob = s.globals.get("steps")
    return 2 if knob is None or knob.fixed is None else knob.fixed


def run_trials(model: nn.Module, data: DataBundle, s: SearchSpace, tmp: Path, n: int = 3) -> optuna.Study:
    from autocomp.api import run_search
    from autocomp.config import SearchConfig

    config = SearchConfig(model="python", dataset="python", n_trials=n, storage=f"sqlite:///{tmp}/s.db",
                          run_dir=str(tmp), baselines=(), keep_artifacts=False, profile=False)  # the space as timed
    return run_search(config, teacher=model, data=data, space=s, progress=False, log=lambda s: None)


def assert_ran(study: optuna.Study, model: nn.Module, s: SearchSpace, n: int = 3) -> None:
    from autocomp.report.frame import trials_frame

    states = [t.state for t in study.trials]
    fails = [t.user_attrs.get("fail_reason") for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * n, fails
    layers = {n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    groups = {r.group for r in s.rules if r.group}
    for t in study.trials:
        for name in t.params:  # what Optuna's own tools show
            owner, _, knob = name.rpartition(".")
            assert owner in layers | groups | {"distill"} and (knob in KNOBS or owner == "distill"), name
        plan = Plan.from_dict(t.user_attrs["plan"])
        assert set(plan.layers) <= layers
    frame = trials_frame(study)
    planned = {f"{layer}.{k}" for t in study.trials for layer in t.user_attrs["plan"]["layers"] for k in KNOBS}
    assert planned <= set(frame.columns)  # the trials table reads like the model too
    assert all(c.removeprefix("params_").count(".") for c in study.trials_dataframe().columns
               if c.startswith("params_"))


# The default space in the quick loop; every other shipped space with the slow tests (`--all`).
@pytest.mark.parametrize("name", [n if n == "default" else pytest.param(n, marks=pytest.mark.slow) for n in SHIPPED])
def test_shipped_space_runs_trials_on_lenet5(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, s = LeNet5().eval(), quick(load_space(name))
    study = run_trials(model, synthetic((1, 28, 28)), s, tmp_path)
    assert_ran(study, model, s)
    # The study searches the space minus the ranks/cuts it timed not to pay (autocomp.study.costs).
    from autocomp.study.costs import costed_space

    used, _ = costed_space(s, model, frozenset({"fc2"}), torch.zeros(1, 1, 28, 28),
                           record=study_attr(study, "layer_costs"))
    searched = [d for d in used.dimensions(model, frozenset({"fc2"})) if not d.startswith("distill.")]
    assert set(searched) <= set(study.trials[0].params)
    assert set(searched) <= set(s.dimensions(model, frozenset({"fc2"})))


TORCHVISION = ("resnet18", "mobilenet_v3_small", "squeezenet1_1")


def _cuts_structure(name: str) -> bool:
    """The space offers channel cuts or ranks: what depends on a model's wiring (residual adds,
    depthwise groups, fire modules' concats). Bits and sparsity apply layer by layer alike."""
    return any(knob in rule.knobs for rule in load_space(name).rules for knob in ("channel_ratio", "rank"))


# Every shipped space on ResNet-18; on the other two models only the spaces that cut structure,
# two trials each (both random startup samples, as a third was). All 30 searches of 3 trials took
# 561 s of the README's test command here; these 22 took 338 s.
@pytest.mark.slow
@pytest.mark.parametrize(("arch", "name"), [(arch, name) for arch in TORCHVISION for name in SHIPPED
                                            if arch == "resnet18" or _cuts_structure(name)])
def test_shipped_space_runs_trials_on_torchvision(arch: str, name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, s = build_model(f"torchvision:{arch}", 10, (3, 32, 32)).eval(), quick(load_space(name))
    study = run_trials(model, synthetic((3, 32, 32)), s, tmp_path, n=2)
    assert_ran(study, model, s, n=2)


def test_the_ramp_benchmarks_space_is_default_with_a_sparsity_ramp() -> None:
    """experiments/default_ramp.yaml is one arm of an A/B: it must stay `default` plus the ramp."""
    default, ramp = load_space("default"), load_space(str(ROOT / "experiments" / "default_ramp.yaml"))
    assert (ramp.rules, ramp.default, ramp.constraints) == (default.rules, default.default, default.constraints)
    assert ramp.fixed_distill() == dataclasses.replace(default.fixed_distill(), sparsity_ramp=0.6)
