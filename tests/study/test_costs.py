"""The timed space: values whose layer timing does not pay are dropped, from a stored record."""

from __future__ import annotations

import optuna
import torch

from autocomp.measure import MeasureConfig
from autocomp.study.costs import costed_space, domain_values, probed_knobs
from autocomp.study.space import Domain, parse_space

SPACE = """
version: 1
layers:
  - name: conv1
    channel_ratio: {low: 0.0, high: 0.5, step: 0.125}
    rank: [1.0, 0.5]
  - name: conv2
    channel_ratio: [0.25, 0.5]
  - pattern: "fc*"
    rank: [1.0, 0.5, 0.25]
    sparsity: {low: 0.0, high: 0.5}
    group: heads
"""


def _model():
    from autocomp.models.zoo import LeNet5

    torch.manual_seed(0)
    return LeNet5().eval()


def test_domain_values_enumerates_choices_and_stepped_ranges_only() -> None:
    assert domain_values(Domain(choices=(1.0, 0.5))) == (1.0, 0.5)
    assert domain_values(Domain(low=0.0, high=0.5, step=0.125)) == (0.0, 0.125, 0.25, 0.375, 0.5)
    assert domain_values(Domain(fixed=0.3)) == (0.3,)
    assert domain_values(Domain(low=0.0, high=0.5)) is None


def test_probed_knobs_are_the_methods_with_a_variant() -> None:
    assert set(probed_knobs()) == {"rank", "channel_ratio"}


def test_values_that_do_not_pay_are_dropped_and_the_noop_kept() -> None:
    model, space = _model(), parse_space(SPACE)
    outputs = frozenset({"fc2"})
    record = {
        # A cut's own timing misses what its consumers save: only a measurably slower one goes.
        "conv1.channel_ratio": {"0.125": [1.0, 0.99, 1.01], "0.25": [1.05, 1.02, 1.08], "0.375": None,
                                "0.5": [0.8, 0.78, 0.82]},
        "conv1.rank": {"0.5": [0.97, 0.95, 1.01]},  # inside the spread: does not pay
        "conv2.channel_ratio": {"0.25": [1.1, 1.05, 1.15], "0.5": [1.2, 1.1, 1.3]},  # none pays, no no-op offered
    }
    costed, same = costed_space(space, model, outputs, torch.randn(1, 1, 28, 28), MeasureConfig(), record)
    assert same is record  # a stored record is used as it is: nothing timed
    params = {p.name: p.spec for p in costed.params(model, outputs)}
    assert params["conv1.channel_ratio"] == Domain(choices=(0.0, 0.125, 0.5))
    assert params["conv1.rank"] == Domain(fixed=1.0)
    assert params["conv2.channel_ratio"] == Domain(choices=(0.25, 0.5))  # as written: the user forced a cut
    assert params["heads.rank"] == Domain(choices=(1.0, 0.5, 0.25))  # groups are never narrowed
    assert "conv1.rank" not in costed.dimensions(model, outputs)
    assert len(costed.dimensions(model, outputs)) == len(space.dimensions(model, outputs)) - 1
    plan = costed.sample(optuna.create_study().ask(), model, outputs)
    assert plan.layers["conv1"].rank == 1.0 and plan.layers["conv1"].channel_ratio in (0.0, 0.125, 0.5)


def test_without_a_record_the_layers_are_timed_and_the_record_names_trial_parameters() -> None:
    model, space = _model(), parse_space(SPACE)
    costed, record = costed_space(space, model, frozenset({"fc2"}), torch.randn(1, 1, 28, 28),
                                  MeasureConfig(min_runs=5, min_seconds=0.0))
    assert set(record) == {"conv1.channel_ratio", "conv1.rank", "conv2.channel_ratio"}
    assert set(record["conv1.channel_ratio"]) == {"0.125", "0.25", "0.375", "0.5"}
    for timings in record.values():
        for value in timings.values():
            assert value is None or value[1] <= value[0] <= value[2]
    again, _ = costed_space(space, model, frozenset({"fc2"}), torch.randn(1, 1, 28, 28), MeasureConfig(), record)
    assert again.overrides == costed.overrides  # a resumed study rebuilds the same space
