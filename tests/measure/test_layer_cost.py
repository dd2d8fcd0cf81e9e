"""Per-layer timing of the changes a space offers (the timing itself is not asserted: only its shape)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autocomp.measure import MeasureConfig
from autocomp.measure.latency import Ratio
from autocomp.measure.layer_cost import layer_costs, layer_input_shapes, pays, ratio_record
from autocomp.methods.lowrank import LowRankConfig
from autocomp.methods.structured import ChannelPruneConfig
from autocomp.models.zoo import LeNet5

VARIANTS = {"rank": LowRankConfig.variant, "channel_ratio": ChannelPruneConfig.variant}


def test_input_shapes_are_per_sample_and_the_model_is_unchanged() -> None:
    model = LeNet5().eval()
    x = torch.randn(1, 1, 28, 28)
    before = model(x)
    shapes = layer_input_shapes(model, x, ["conv1", "conv2", "fc1", "fc2"])
    assert shapes == {"conv1": (1, 28, 28), "conv2": (20, 12, 12), "fc1": (800,), "fc2": (500,)}
    assert torch.equal(model(x), before)  # the hooks are gone


def test_every_candidate_gets_a_ratio_or_none_when_it_changes_nothing() -> None:
    torch.manual_seed(0)
    model = LeNet5().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    candidates = {("fc1", "rank"): [0.9, 0.25], ("conv1", "channel_ratio"): [0.01, 0.5], ("fc2", "rank"): [0.5]}
    costs = layer_costs(model, torch.randn(1, 1, 28, 28), candidates, VARIANTS,
                        MeasureConfig(min_runs=5, min_seconds=0.0))
    assert set(costs) == set(candidates)
    assert costs[("fc1", "rank")][0.9] is None  # rank 0.9 of 500x800 would add MACs: left alone
    assert costs[("conv1", "channel_ratio")][0.01] is None  # round(0.01 * 20) = 0 channels cut
    # fc2 (500 -> 10) at rank 5 halves its MACs, so it is timed (here it ran ~1.1x: one more node).
    for ratio in (costs[("fc1", "rank")][0.25], costs[("conv1", "channel_ratio")][0.5], costs[("fc2", "rank")][0.5]):
        assert isinstance(ratio, Ratio) and ratio.low <= ratio.median <= ratio.high and ratio.rounds >= 5
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # export baked copies only


def test_variants_have_the_shapes_the_methods_produce() -> None:
    conv = nn.Conv2d(16, 32, 3, padding=1)
    cut = ChannelPruneConfig.variant(conv, 0.25)
    assert (cut.in_channels, cut.out_channels, cut.kernel_size, cut.padding) == (16, 24, (3, 3), (1, 1))
    grouped = ChannelPruneConfig.variant(nn.Conv2d(16, 32, 3, groups=4), 0.5)
    assert (grouped.out_channels, grouped.groups) == (16, 4)
    assert ChannelPruneConfig.variant(nn.Conv2d(8, 8, 3, groups=8), 0.5) is None  # depthwise follows its input
    assert ChannelPruneConfig.variant(nn.Linear(10, 64), 0.5).out_features == 32
    pair = LowRankConfig.variant(nn.Linear(800, 500), 0.25)
    assert [m.out_features for m in pair] == [125, 500]
    assert LowRankConfig.variant(nn.Linear(800, 500), 1.0) is None


@pytest.mark.parametrize(("ratio", "expected"), [
    (Ratio(0.8, 0.78, 0.82, 9), True), (Ratio(0.97, 0.95, 1.0, 9), False), (Ratio(1.2, 1.1, 1.3, 9), False),
    (None, False),
])
def test_a_change_pays_only_when_its_whole_spread_is_below_one(ratio, expected: bool) -> None:
    assert pays(ratio) is expected
    assert ratio_record(ratio) == (None if ratio is None else [ratio.median, ratio.low, ratio.high])


class _Broken(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("cannot run alone")


def test_a_layer_that_cannot_be_timed_alone_is_left_out_not_decided() -> None:
    model = LeNet5().eval()
    costs = layer_costs(model, torch.randn(1, 1, 28, 28), {("fc1", "rank"): [0.5], ("fc2", "rank"): [0.5]},
                        {"rank": lambda layer, v: _Broken() if layer.out_features == 500 else None},
                        MeasureConfig(min_runs=5, min_seconds=0.0))
    assert costs == {("fc2", "rank"): {0.5: None}}
