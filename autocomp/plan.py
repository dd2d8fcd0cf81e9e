"""The Plan: a frozen, JSON-serializable description of one compressed model.

Rebuilding any trial needs only the teacher, the Plan and the seed, so the Plan is stored on
every Optuna trial and is all that ``report`` and ``export`` read back.

Example::

    plan = Plan(layers={"fc1": LayerPlan(sparsity=0.5, bits=4)})
    assert Plan.from_json(plan.to_json()) == plan
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from autocomp.errors import AutocompError

PLAN_VERSION = 1


@dataclass(frozen=True)
class LayerPlan:
    """Per-layer choices. Defaults mean "leave this layer alone"."""

    sparsity: float = 0.0  # fraction of weights zeroed by magnitude (unstructured)
    channel_ratio: float = 0.0  # fraction of output channels physically removed
    bits: int | None = None  # weight bit width; None keeps float32
    rank: float = 1.0  # fraction of full rank kept by SVD; 1.0 = not factorized

    def __post_init__(self) -> None:
        if not 0.0 <= self.sparsity < 1.0:
            raise AutocompError(f"sparsity must be in [0, 1), got {self.sparsity}")
        if not 0.0 <= self.channel_ratio < 1.0:
            raise AutocompError(f"channel_ratio must be in [0, 1), got {self.channel_ratio}")
        if self.bits is not None and not (isinstance(self.bits, int) and 2 <= self.bits <= 8):
            raise AutocompError(f"bits must be an integer from 2 to 8 or null, got {self.bits!r}")
        if not 0.0 < self.rank <= 1.0:
            raise AutocompError(f"rank must be in (0, 1], got {self.rank}")

    @property
    def is_noop(self) -> bool:
        return self == LayerPlan()


@dataclass(frozen=True)
class DistillPlan:
    """Global fine-tune settings: KD temperature and weight, L1 penalty, budget."""

    temperature: float = 4.0
    alpha: float = 0.7  # weight of the KD term; (1 - alpha) goes to cross-entropy
    l1: float = 0.0  # lambda of the L1 penalty on weights
    steps: int = 100  # optimizer steps of the brief fine-tune; 0 = none
    lr: float = 1e-3
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise AutocompError(f"temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.alpha <= 1.0:
            raise AutocompError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.l1 < 0:
            raise AutocompError(f"l1 must be >= 0, got {self.l1}")
        if self.steps < 0:
            raise AutocompError(f"steps must be >= 0, got {self.steps}")
        if self.lr <= 0:
            raise AutocompError(f"lr must be > 0, got {self.lr}")
        if self.batch_size < 1:
            raise AutocompError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class Plan:
    """Every choice that turns the teacher into one student.

    ``quant_mode`` is how quantized layers are trained: ``qat`` (fake-quant with a
    straight-through estimator during fine-tune), ``ptq`` (weights rounded after fine-tune,
    activations calibrated) or ``dynamic`` (int8 weights, activations quantized at run time).
    """

    layers: Mapping[str, LayerPlan] = field(default_factory=dict)
    distill: DistillPlan = field(default_factory=DistillPlan)
    quant_mode: str = "qat"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.quant_mode not in ("qat", "ptq", "dynamic"):
            raise AutocompError(f"quant_mode must be qat, ptq or dynamic, got {self.quant_mode!r}")
        # A plain dict is hashable-unsafe inside a frozen dataclass; keep a sorted copy so two
        # equal plans compare and serialize identically.
        object.__setattr__(self, "layers", dict(sorted(self.layers.items())))

    def layer(self, name: str) -> LayerPlan:
        return self.layers.get(name, LayerPlan())

    @property
    def active_layers(self) -> dict[str, LayerPlan]:
        return {k: v for k, v in self.layers.items() if not v.is_noop}

    def with_distill(self, **changes: Any) -> Plan:
        return replace(self, distill=replace(self.distill, **changes))

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": PLAN_VERSION,
            "layers": {k: asdict(v) for k, v in self.layers.items()},
            "distill": asdict(self.distill),
            "quant_mode": self.quant_mode,
            "seed": self.seed,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        if not isinstance(data, Mapping):
            raise AutocompError("plan must be a mapping")
        version = data.get("version", PLAN_VERSION)
        if version != PLAN_VERSION:
            raise AutocompError(f"plan version {version} is not supported (expected {PLAN_VERSION})")
        try:
            layers = {str(k): _build(LayerPlan, v) for k, v in dict(data.get("layers", {})).items()}
            distill = _build(DistillPlan, data.get("distill", {}))
        except TypeError as exc:
            raise AutocompError(f"malformed plan: {exc}") from None
        return cls(
            layers=layers,
            distill=distill,
            quant_mode=data.get("quant_mode", "qat"),
            seed=int(data.get("seed", 0)),
        )

    @classmethod
    def from_json(cls, text: str) -> Plan:
        return cls.from_dict(json.loads(text))

    @classmethod
    def uniform(cls, layer_names: list[str], **layer_settings: Any) -> Plan:
        """The same LayerPlan on every named layer (used for the uniform baselines)."""
        return cls(layers={name: LayerPlan(**layer_settings) for name in layer_names})


def _build(kind: type, values: Any) -> Any:
    if not isinstance(values, Mapping):
        raise TypeError(f"{kind.__name__} must be a mapping")
    known = {f.name for f in fields(kind)}
    unknown = set(values) - known
    if unknown:
        raise TypeError(f"unknown {kind.__name__} keys {sorted(unknown)}")
    return kind(**values)
