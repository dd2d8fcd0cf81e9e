"""Which per-layer changes pay on the target runtime: each layer timed alone against its variants.

MACs are not latency. A factorized small layer adds a node whose fixed cost can exceed the MACs
it saves (ShuffleNetV2 and MNASNet points that factorized 23-26 layers ran 1.3-1.7x slower than
the teacher), and cutting the digits CNN's convs from 16/32 to 12/24 channels made it 1.08x
slower (ONNX Runtime's CPU kernels work in blocks of 8 or 16 channels). So once per study every layer a
space may factorize or prune is exported alone, as an fp32 artifact on its own input shape, and
timed in the study's runtime (``MeasureConfig.runtime``) against each variant the space offers,
interleaved in shuffled rounds (``autocomp.measure.latency``). A value pays when the whole spread
of its ratio to the original layer lies below 1.

A method says what a value does to one layer through a ``variant(layer, value)`` classmethod on
its config (``None``: the value leaves the layer as it is). The timings are fp32 and of the layer
alone: the next layer's share of a channel cut is not counted (so a cut is judged
conservatively), nor are int8 kernels.

Example::

    costs = layer_costs(model, x[:1], {("fc1", "rank"): [0.5, 0.25]}, {"rank": LowRankConfig.variant})
    costs[("fc1", "rank")][0.25]   # Ratio(median=0.41, low=0.40, high=0.42, rounds=...) or None
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autocomp.measure.latency import Ratio, paired_rounds
from autocomp.measure.protocol import MeasureConfig, session_for

Variant = Callable[[nn.Module, Any], "nn.Module | None"]


def layer_input_shapes(model: nn.Module, example_input: torch.Tensor, names: Iterable[str]) -> dict[str, tuple]:
    """Per-sample input shape of each named layer, from one forward pass."""
    shapes: dict[str, tuple] = {}

    def record(name: str, args: tuple) -> None:  # a pre-hook that returns something replaces the inputs
        shapes.setdefault(name, tuple(args[0].shape[1:]))

    hooks = [model.get_submodule(n).register_forward_pre_hook(lambda mod, args, n=n: record(n, args))
             for n in set(names)]
    try:
        with torch.no_grad():
            model.eval()(example_input)
    finally:
        for h in hooks:
            h.remove()
    return shapes


def _session(module: nn.Module, shape: tuple, path: Path, config: MeasureConfig):  # noqa: ANN202
    from autocomp.artifact import export  # deferred: the artifact package imports ORT

    example = torch.zeros(1, *shape)
    # Export bakes in place: never the model's own layer. Only timed, so not deflated: that took 16
    # of the 27 s costing ResNet-18's layers at 32 px.
    export(copy.deepcopy(module).eval(), example, [], path, deflate=False)
    return session_for(path, config)  # the study's runtime: what pays there is what counts


def layer_costs(
    model: nn.Module, example_input: torch.Tensor, candidates: Mapping[tuple[str, str], Iterable[Any]],
    variants: Mapping[str, Variant], config: MeasureConfig = MeasureConfig(),
) -> dict[tuple[str, str], dict[Any, Ratio | None]]:
    """``{(layer, knob): {value: ratio of the changed layer's time to the original's}}``.

    A value whose variant is ``None`` (it changes nothing) maps to ``None``. Each layer and
    knob is one interleaved timing of the original and all its variants. A layer that does not
    run on the example, or that cannot be exported or run alone, is left out: nothing is known
    about it, so nothing is decided.
    """
    shapes = layer_input_shapes(model, example_input, [layer for layer, _ in candidates])
    out: dict[tuple[str, str], dict[Any, Ratio | None]] = {}
    with tempfile.TemporaryDirectory(prefix="autocomp-cost-") as tmp, torch.no_grad():
        for i, ((layer, knob), values) in enumerate(candidates.items()):
            original, shape = model.get_submodule(layer), shapes.get(layer)
            if shape is None:
                continue
            built = {v: variants[knob](original, v) for v in values}
            live = [v for v, m in built.items() if m is not None]
            results: dict[Any, Ratio | None] = {v: None for v, m in built.items() if m is None}
            if live:
                torch.manual_seed(0)
                try:
                    sessions = [_session(m, shape, Path(tmp, f"{i}_{j}.acz"), config)
                                for j, m in enumerate([*(built[v] for v in live), original])]
                    rounds = paired_rounds(sessions, shape, config.batch, min_runs=config.min_runs,
                                           min_seconds=config.min_seconds)
                except Exception:  # noqa: BLE001 - advisory timing: an odd layer must not stop a study
                    continue
                results.update({v: rounds.ratio(j, len(live), config.min_spread) for j, v in enumerate(live)})
            out[(layer, knob)] = results
    return out


def pays(ratio: Ratio | None) -> bool:
    """A change pays when its whole spread is below the original layer's time."""
    return ratio is not None and ratio.high < 1.0


def ratio_record(ratio: Ratio | None) -> list[float] | None:
    """A ratio as stored on the study: ``[median, low, high]``."""
    return None if ratio is None else [round(float(x), 4) for x in (ratio.median, ratio.low, ratio.high)]

