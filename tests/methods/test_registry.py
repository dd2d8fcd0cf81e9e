"""The registry is the single source of per-layer settings: a toy fifth knob, registered from
this file alone, reaches the space, the Plan, ``apply``, the trials table and the report."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import optuna
import pytest
import torch
from tiny_models import tiny_mlp
from torch import nn

from autocomp.api import run_search
from autocomp.config import SearchConfig
from autocomp.errors import AutocompError
from autocomp.methods.registry import Knob, MethodContext, knobs, register, unregister
from autocomp.models.layers import leaf_targets
from autocomp.pipeline.compress import apply
from autocomp.plan import LayerPlan, Plan
from autocomp.report.frame import plan_summary, trials_frame
from autocomp.report.plots import layer_settings_text, policy_data
from autocomp.study.space import parse_space


@dataclass(frozen=True)
class ScaleConfig:
    """A toy method: multiply a layer's weights by ``factor``."""

    factor: float
    KNOB: ClassVar[Knob] = Knob("weight_scale", noop=1.0, kind="float", low=0.5, high=2.0, stage=35,
                                title="weight scale", label="scaled", short="ws")

    def __post_init__(self) -> None:
        if not 0.0 < self.factor <= 4.0:
            raise AutocompError(f"weight_scale must be in (0, 4], got {self.factor}")

    @classmethod
    def from_value(cls, value: Any, plan: Any = None) -> ScaleConfig:
        return cls(value)


def _apply_scale(model: nn.Module, configs: dict[str, ScaleConfig], ctx: MethodContext) -> None:
    with torch.no_grad():
        for name, config in configs.items():
            for _, layer in leaf_targets(model, name):
                layer.weight.mul_(config.factor)


@pytest.fixture
def toy_knob() -> Iterator[None]:
    register(ScaleConfig)(_apply_scale)
    try:
        yield
    finally:
        unregister(ScaleConfig)


SPACE = """\
version: 1
layers:
  - type: Linear
    weight_scale: {low: 0.5, high: 2.0}
global:
  steps: 2
  batch_size: 32
"""


def test_a_toy_knob_reaches_space_plan_and_apply(toy_knob) -> None:
    assert list(knobs()) == ["rank", "channel_ratio", "sparsity", "weight_scale", "bits"]  # by stage
    model = tiny_mlp().eval()
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    plan = parse_space(SPACE, "toy.yaml").sample(trial, model)
    assert set(trial.params) == {"1.weight_scale", "3.weight_scale"}
    scale = plan.layers["1"].weight_scale
    assert scale == trial.params["1.weight_scale"] != 1.0
    assert Plan.from_json(plan.to_json()) == plan
    student = apply(model, plan, torch.zeros(1, 1, 8, 8))
    assert torch.allclose(student[1].weight, model[1].weight * scale)
    with pytest.raises(AutocompError, match="weight_scale must be in"):
        LayerPlan(weight_scale=-1.0)  # the method's own config validates the Plan
    with pytest.raises(AutocompError, match=r"toy.yaml: layers\[0\].weight_scale.high: must be from 0.5 to 2"):
        parse_space(SPACE.replace("high: 2.0", "high: 3.0"), "toy.yaml")  # the knob's range bounds the space


def test_a_toy_knob_reaches_the_trials_table_and_the_report(toy_knob, tiny_data, tmp_path) -> None:
    config = SearchConfig(model="python", dataset="python", n_trials=3, storage=f"sqlite:///{tmp_path / 's.db'}",
                          study_name="toy", run_dir=str(tmp_path), baselines=("teacher",))
    study = run_search(config, teacher=tiny_mlp().eval(), data=tiny_data, space=parse_space(SPACE, "toy.yaml"),
                       progress=False, log=lambda s: None)
    frame = trials_frame(study)
    searched = frame[frame["baseline"] == ""]
    assert len(searched) == 2 and searched["1.weight_scale"].between(0.5, 2.0).all()
    row = searched.iloc[0].to_dict()
    assert "2 scaled" in plan_summary(row) and "1: ws" in layer_settings_text(row)
    policy = policy_data(frame.assign(pareto=True))  # every point on the front, to see each one's row
    i, j = policy.trials.index(int(row["trial"])), policy.layers.index("1")
    assert policy.knobs["weight_scale"][i][j] == row["1.weight_scale"]
    assert policy.knobs["weight_scale"][policy.trials.index(0)] == [1.0, 1.0]  # the teacher: the no-op
    assert "1.weight_scale" in (tmp_path / "trials.csv").read_text().splitlines()[0]
