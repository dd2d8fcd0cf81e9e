"""What Tucker-2 and CP share: a chain of convs that answers for the conv it replaces, and the
checks that keep a poor decomposition out of a model.

A chain replaces the layer under its name (like low rank's ``LowRankPair``): its first factor
reads the layer's inputs, its last one writes the layer's outputs with the layer's bias, and
``weight`` is the dense kernel the chain computes, so code that reads ``layer.weight`` still
works and the reconstruction error is measured on exactly what runs.

A decomposition is kept only when its factors are finite, its relative reconstruction error
``||W - W'|| / ||W||`` is at most ``MAX_ERROR`` and its components do not cancel each other
(CP's known degeneracy: large components of opposite sign, which fine-tune and int8 both
amplify; ``sqrt(sum ||component||^2) / ||W||`` is 1 for orthogonal components). Otherwise the
layer stays as it was and the reason is recorded, for that layer only: ``MethodContext.notes``
holds per layer the method, its seconds, the error and any refusal, which the trial stores
(``decomposed``) apart from its fine-tune time.

Decompositions are deterministic, and CP's ALS takes minutes on a 512-channel 3x3 conv, so a
process keeps the last ``CACHE_SIZE`` outcomes by kernel digest, geometry and ranks: trials and
the profile that ask for the same layer at the same ranks decompose it once.
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

MAX_ERROR = 0.95  # relative error above which the factors keep under a tenth of the kernel's energy
MAX_CANCELLATION = 10.0  # root of the components' summed squared norms over the kernel's norm
CACHE_SIZE = 256  # a ResNet-18 space offering 4 words on 17 convs needs 68; each holds one layer's factors


class ConvChain(nn.Sequential):
    """Convs in sequence that still answer for the conv they replace."""

    bias = property(lambda self: self[-1].bias)
    in_channels = property(lambda self: self[0].in_channels)
    out_channels = property(lambda self: self[-1].out_channels)

    @property
    def weight(self) -> torch.Tensor:  # pragma: no cover - each chain defines its own
        raise NotImplementedError


@dataclass(frozen=True)
class Outcome:
    """One layer's decomposition: the chain (None when refused), the error, the seconds it took."""

    chain: ConvChain | None
    error: float
    seconds: float  # what the decomposition took when it ran
    refused: str = ""
    cached: bool = False  # taken from this process's cache: it cost nothing this time


_CACHE: OrderedDict[tuple, Outcome] = OrderedDict()


def plain_conv(layer: nn.Module) -> str:
    """Why ``layer`` cannot be decomposed ("" when it can): a groups=1 zero-padded kxk Conv2d."""
    if not isinstance(layer, nn.Conv2d):
        return "not a Conv2d"
    if layer.groups != 1:
        return "a grouped conv"
    if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
        return "padding the factors cannot split"
    return ""


def relative_error(layer: nn.Conv2d, chain: ConvChain) -> float:
    w = layer.weight.detach().double()
    diff = torch.linalg.vector_norm(chain.weight.detach().double() - w)
    return float(diff / torch.linalg.vector_norm(w).clamp_min(1e-30))


def checked(layer: nn.Conv2d, key: tuple, build: Callable[[], tuple[ConvChain, float]]) -> Outcome:
    """Build the chain and keep it only if it is a faithful start (see the module doc).

    ``build`` returns the chain and its cancellation ratio (``MAX_CANCELLATION``'s measure).
    ``key`` names the method and its ranks; an outcome already in the cache is returned with a
    copy of its chain, marked ``cached``."""
    w = layer.weight.detach()
    key = (*key, hashlib.sha256(w.cpu().float().numpy().tobytes()).hexdigest(), tuple(w.shape), layer.stride,
           layer.padding, layer.dilation, layer.bias is not None and
           hashlib.sha256(layer.bias.detach().cpu().float().numpy().tobytes()).hexdigest())
    if key in _CACHE:
        _CACHE.move_to_end(key)
        hit = _CACHE[key]
        return Outcome(copy.deepcopy(hit.chain), hit.error, hit.seconds, hit.refused, cached=True)
    outcome = _checked(layer, build)
    _CACHE[key] = outcome
    while len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)
    return Outcome(copy.deepcopy(outcome.chain), outcome.error, outcome.seconds, outcome.refused)


def _checked(layer: nn.Conv2d, build: Callable[[], tuple[ConvChain, float]]) -> Outcome:
    start = time.perf_counter()
    try:
        with torch.no_grad():
            chain, cancellation = build()
    except (ArithmeticError, ValueError, RuntimeError, FloatingPointError, MemoryError) as exc:
        return Outcome(None, float("nan"), time.perf_counter() - start,
                       f"did not converge: {type(exc).__name__}: {exc}".splitlines()[0][:200])
    seconds = time.perf_counter() - start
    if not all(torch.isfinite(p).all() for p in chain.parameters()):
        return Outcome(None, float("nan"), seconds, "did not converge: non-finite factors")
    error = relative_error(layer, chain)
    if not error <= MAX_ERROR:
        return Outcome(None, error, seconds, f"relative reconstruction error {error:.3f} > {MAX_ERROR}")
    if cancellation > MAX_CANCELLATION:
        return Outcome(None, error, seconds, f"degenerate: components {cancellation:.1f}x the kernel's norm "
                                             f"cancel each other (limit {MAX_CANCELLATION:g})")
    return Outcome(chain.to(layer.weight.device, layer.weight.dtype), error, seconds)


def decompose_layers(model: nn.Module, configs: dict[str, Any], ctx: Any) -> None:
    """Replace each named layer by its chain (``config.outcome(layer)``), noting every outcome."""
    for name, config in configs.items():
        if ctx.called_layers is not None and name not in ctx.called_layers:
            continue  # read by attribute only: a chain would never run (see ``autocomp.methods.lowrank``)
        outcome = config.outcome(model.get_submodule(name))
        if outcome is None:
            continue
        ctx.notes[name] = {"method": config.value, "seconds": round(outcome.seconds, 4), "cached": outcome.cached,
                           "error": None if outcome.error != outcome.error else round(outcome.error, 4),
                           **({"refused": outcome.refused} if outcome.refused else {})}
        if outcome.chain is not None:
            parent_name, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, attr, outcome.chain)


def conv(cin: int, cout: int, kernel: tuple[int, int], weight: torch.Tensor, *, stride: tuple[int, int] = (1, 1),
         padding: tuple[int, int] = (0, 0), dilation: tuple[int, int] = (1, 1), groups: int = 1,
         bias: torch.Tensor | None = None) -> nn.Conv2d:
    """A conv holding ``weight`` (as float32) and ``bias`` (none when None)."""
    layer = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, dilation=dilation, groups=groups,
                      bias=bias is not None)
    layer.weight.copy_(torch.as_tensor(weight, dtype=torch.float32).reshape(layer.weight.shape))
    if bias is not None:
        layer.bias.copy_(bias.detach())
    return layer
