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
from autocomp.methods.quantize import check_mode
from autocomp.methods.registry import knobs

PLAN_VERSION = 1
# Fixed plans a user would otherwise pick by hand, enqueued as trials next to the search:
# the teacher (no compression, no fine-tune) and one setting on every layer.
BASELINES: dict[str, dict[str, Any] | None] = {
    "teacher": None,
    "int8": {"bits": 8},
    "int4": {"bits": 4},
    "prune50": {"sparsity": 0.5},
    "prune90": {"sparsity": 0.9},
    "svd50": {"rank": 0.5},
    "channels50": {"channel_ratio": 0.5},  # float, half the channels: removes work, adds no node
}


class LayerPlan:
    """Per-layer choices: one value per registered knob (``autocomp.methods.registry.knobs``).

    A knob not given keeps its no-op value, so ``LayerPlan()`` leaves the layer alone. Values
    are validated by the method's own config class. Immutable, hashable, and equal when the
    same knobs are active with the same values.

    Example::

        lp = LayerPlan(sparsity=0.5, bits=4)
        lp.bits, lp.rank          # 4, 1.0 (rank left alone)
    """

    __slots__ = ("_active",)

    def __init__(self, **values: Any) -> None:
        table = knobs()
        unknown = sorted(set(values) - set(table))
        if unknown:
            raise AutocompError(f"unknown layer setting {', '.join(map(repr, unknown))} (known: {', '.join(table)})")
        active = {}
        for name, knob in table.items():
            if name in values and knob.active(values[name]):
                knob.config(values[name])  # the method's config validates the value
                active[name] = values[name]
        object.__setattr__(self, "_active", active)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._active:
            return self._active[name]
        table = knobs()
        if name in table:
            return table[name].noop
        raise AttributeError(f"LayerPlan has no setting {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("LayerPlan is immutable")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LayerPlan) and self._active == other._active

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._active.items())))

    def __repr__(self) -> str:
        return f"LayerPlan({', '.join(f'{k}={v!r}' for k, v in self._active.items())})"

    @property
    def is_noop(self) -> bool:
        return not self._active

    @property
    def active(self) -> dict[str, Any]:
        """The knobs that change this layer, in ``apply`` order."""
        return dict(self._active)

    def to_dict(self) -> dict[str, Any]:
        """Every registered knob's value (no-ops included), as stored on a trial."""
        return {name: self._active.get(name, knob.noop) for name, knob in knobs().items()}


@dataclass(frozen=True)
class DistillPlan:
    """Global fine-tune settings: KD temperature and weight, L1 penalty, budget, sparsity ramp."""

    temperature: float = 4.0
    alpha: float = 0.7  # weight of the KD term; (1 - alpha) goes to cross-entropy
    l1: float = 0.0  # lambda of the L1 penalty on weights
    steps: int = 100  # optimizer steps of the brief fine-tune; 0 = none
    lr: float = 1e-3
    batch_size: int = 64
    # Share of the steps over which pruned layers' sparsity ramps up from 0 (``ramp_masks``);
    # 0: the masks hold their full sparsity from the first step.
    sparsity_ramp: float = 0.0

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
        if not 0.0 <= self.sparsity_ramp < 1.0:
            raise AutocompError(f"sparsity_ramp must be in [0, 1), got {self.sparsity_ramp}")


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
        check_mode(self.quant_mode)
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
            "layers": {k: v.to_dict() for k, v in self.layers.items()},
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
            layers = {str(k): _layer(v) for k, v in dict(data.get("layers", {})).items()}
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

    @classmethod
    def baseline(cls, name: str, layer_names: list[str], template: Plan,
                 output_layers: frozenset[str] = frozenset()) -> Plan:
        """A named baseline (``BASELINES``) with ``template``'s fine-tune, quant mode and seed.

        A knob not offered on output layers (a channel cut: their outputs are the classes) is
        left off them, so the stored Plan holds only what the baseline really changes.
        """
        if name not in BASELINES:
            raise AutocompError(f"unknown baseline {name!r} (expected {', '.join(BASELINES)})")
        settings = BASELINES[name]
        if settings is None:  # the teacher: nothing changed, nothing fine-tuned
            return cls(seed=template.seed).with_distill(steps=0)
        table = knobs()
        layers = {}
        for layer in layer_names:
            own = {k: v for k, v in settings.items() if layer not in output_layers or table[k].on_output_layers}
            if own:
                layers[layer] = LayerPlan(**own)
        return replace(template, layers=layers)


def _layer(values: Any) -> LayerPlan:
    if not isinstance(values, Mapping):
        raise TypeError("LayerPlan must be a mapping")
    return LayerPlan(**{str(k): v for k, v in values.items()})


def _build(kind: type, values: Any) -> Any:
    if not isinstance(values, Mapping):
        raise TypeError(f"{kind.__name__} must be a mapping")
    known = {f.name for f in fields(kind)}
    unknown = set(values) - known
    if unknown:
        raise TypeError(f"unknown {kind.__name__} keys {sorted(unknown)}")
    return kind(**values)
