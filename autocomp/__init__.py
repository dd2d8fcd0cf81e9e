"""autocomp: search per-layer compression of a PyTorch model; every point measured on its artifact.

Example::

    import autocomp
    study = autocomp.search(model, (x_train, y_train), (x_val, y_val), n_trials=30)

Heavy modules (torch, optuna, plotly) load on first use, so ``import autocomp`` stays fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "search": "autocomp.api",
    "run_search": "autocomp.api",
    "SearchConfig": "autocomp.config",
    "Plan": "autocomp.plan",
    "LayerPlan": "autocomp.plan",
    "DistillPlan": "autocomp.plan",
    "apply": "autocomp.pipeline.compress",
    "load_space": "autocomp.study.space",
    "parse_space": "autocomp.study.space",
    "AutocompError": "autocomp.errors",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'autocomp' has no attribute {name!r}")
