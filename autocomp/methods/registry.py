"""Methods are registered handlers keyed by their config type (the torchao pattern).

A method is a frozen config dataclass plus a handler registered for it. A per-layer method's
config also declares its ``KNOB``: the Plan field it reads, the range a search space may ask
for, the value that leaves a layer alone, its place in the order of ``apply`` and how the
report shows it. Everything that lists per-layer settings (``LayerPlan``, the space validator,
``apply``, the trials table, the plots) reads them from here, so a new method touches its own
module and nothing else.

A handler takes the model, a mapping ``{layer name: config}`` for the layers the plan
targets, and a context with an example input; it edits the model in place or returns a new one.
One knob may read several configs (``rank``: SVD, or the words ``tucker2:...`` and ``cp:...``);
``apply`` calls each config type's own handler.

Example::

    @dataclass(frozen=True)
    class ClusterConfig:
        clusters: int
        KNOB: ClassVar[Knob] = Knob("clusters", noop=0, kind="int", low=0, high=256, stage=35)

        @classmethod
        def from_value(cls, value, plan):
            return cls(value)

    @register(ClusterConfig)
    def apply_clusters(model, configs, ctx): ...
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

Handler = Callable[[nn.Module, dict[str, object], "MethodContext"], "nn.Module | None"]
_HANDLERS: dict[type, Handler] = {}
_KNOBS: dict[str, Knob] = {}
_BUILTINS_LOADED = False


@dataclass(frozen=True)
class Knob:
    """One per-layer setting, declared by its method's config class as ``KNOB``.

    ``kind`` is ``float`` (a range ``[low, high]``), ``int`` (whole numbers in it) or ``bits``
    (whole numbers in it, or null for "keep float"). ``low``/``high`` bound what a search space
    may ask for; the config's own validation bounds what a Plan may hold. ``stage`` orders
    ``apply`` (low rank 10, channels 20, masks 30, quantization 40).
    """

    name: str
    noop: Any
    kind: str
    low: float
    high: float
    stage: int
    on_output_layers: bool = True  # False: never offered where a layer's outputs are the model's
    title: str = ""  # report heatmap title
    label: str = ""  # words of the report's one-line plan summary ("sparse", "channels cut")
    short: str = ""  # hover text per layer: "sp0.50" (or "4b" for bits)
    colorscale: str = "Blues"
    shown_noop: float | None = None  # what a heatmap cell shows for a layer left alone (bits: 32)
    shown_range: tuple[float, float] = (0.0, 1.0)
    words: bool = False  # values may also be words the config reads, like rank's "tucker2:0.5" (lists only)
    method: type | None = field(default=None, compare=False)  # the config class, set by ``register``

    def __post_init__(self) -> None:
        if self.kind not in ("float", "int", "bits"):
            raise ValueError(f"knob {self.name!r}: kind must be float, int or bits, got {self.kind!r}")

    def active(self, value: Any) -> bool:
        """True when ``value`` changes the layer."""
        return value != self.noop

    def config(self, value: Any, plan: Any = None) -> object:
        """The method's config for one layer (validated by the config itself)."""
        return self.method.from_value(value, plan)

    @property
    def display_noop(self) -> float:
        return float(self.noop if self.shown_noop is None else self.shown_noop)

    def number(self, value: Any) -> float:
        """The value as a plot shows it: a word shows the fraction its config keeps."""
        return float(self.config(value).fraction) if isinstance(value, str) else float(value)

    def text(self, value: Any) -> str:
        """The value in a one-line plan summary: ``4b``, ``sp0.50``, ``tucker2:0.5``."""
        if isinstance(value, str):
            return value
        return f"{int(value)}{self.short}" if self.kind == "bits" else f"{self.short}{value:.2f}"


@dataclass
class MethodContext:
    example_input: torch.Tensor
    output_layers: frozenset[str] = frozenset()  # layers whose outputs are the model's outputs
    called_layers: frozenset[str] | None = None  # layers the model calls as modules (None: unknown, all)
    notes: dict[str, dict] = field(default_factory=dict)  # per layer, what a method wants recorded


def register(config_type: type) -> Callable[[Handler], Handler]:
    """Register ``handler`` as the transform for ``config_type`` (and its ``KNOB``, if any)."""

    def wrap(handler: Handler) -> Handler:
        if config_type in _HANDLERS:
            raise ValueError(f"a handler for {config_type.__name__} is already registered")
        knob = getattr(config_type, "KNOB", None)
        if knob is not None:
            if knob.name in _KNOBS:
                raise ValueError(f"a knob named {knob.name!r} is already registered")
            if not hasattr(config_type, "from_value"):
                raise ValueError(f"{config_type.__name__} declares a KNOB but no from_value(value, plan)")
            _KNOBS[knob.name] = replace(knob, method=config_type)
        _HANDLERS[config_type] = handler
        return handler

    return wrap


def unregister(config_type: type) -> None:
    """Remove a registered method (tests register toy methods and take them away again)."""
    _HANDLERS.pop(config_type, None)
    knob = getattr(config_type, "KNOB", None)
    if knob is not None and knob.name in _KNOBS and _KNOBS[knob.name].method is config_type:
        del _KNOBS[knob.name]


def handler_for(config_type: type) -> Handler:
    try:
        return _HANDLERS[config_type]
    except KeyError:
        raise KeyError(f"no handler registered for {config_type.__name__}") from None


def knobs() -> dict[str, Knob]:
    """Every registered per-layer knob, in the order ``apply`` runs them."""
    _load_builtins()
    return dict(sorted(_KNOBS.items(), key=lambda kv: (kv[1].stage, kv[0])))


def _load_builtins() -> None:
    """Import every module of ``autocomp.methods`` once, so their registrations have run."""
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    import autocomp.methods as package

    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{info.name}")
