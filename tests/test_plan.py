import pytest

from autocomp.errors import AutocompError
from autocomp.plan import DistillPlan, LayerPlan, Plan


def test_plan_round_trips_through_json() -> None:
    plan = Plan(layers={"b": LayerPlan(bits=4, sparsity=0.5), "a": LayerPlan(rank=0.25)},
                distill=DistillPlan(temperature=3.0, alpha=0.4, steps=7, sparsity_ramp=0.6), quant_mode="ptq", seed=5)
    again = Plan.from_json(plan.to_json())
    assert again == plan
    assert list(again.layers) == ["a", "b"]  # sorted, so equal plans serialize identically


def test_noop_layers_are_not_active() -> None:
    plan = Plan(layers={"a": LayerPlan(), "b": LayerPlan(bits=8)})
    assert list(plan.active_layers) == ["b"]


@pytest.mark.parametrize("kwargs", [{"sparsity": 1.0}, {"sparsity": -0.1}, {"bits": 1}, {"bits": 9},
                                    {"bits": 4.0}, {"rank": 0.0}, {"rank": 1.5}, {"channel_ratio": 1.0}])
def test_layer_plan_rejects_out_of_range(kwargs: dict) -> None:
    with pytest.raises(AutocompError):
        LayerPlan(**kwargs)


@pytest.mark.parametrize("data", [{"version": 2}, {"layers": {"a": {"bitz": 4}}}, {"layers": {"a": 3}},
                                  {"distill": {"temperature": -1}},
                                  {"distill": {"sparsity_ramp": 1.0}}, [1, 2]])
def test_from_dict_rejects_malformed(data: object) -> None:
    with pytest.raises(AutocompError):
        Plan.from_dict(data)


def test_a_plan_stored_before_the_sparsity_ramp_reads_back_without_one() -> None:
    stored = Plan(layers={"a": LayerPlan(sparsity=0.5)}).to_dict()
    del stored["distill"]["sparsity_ramp"]
    assert Plan.from_dict(stored).distill.sparsity_ramp == 0.0
