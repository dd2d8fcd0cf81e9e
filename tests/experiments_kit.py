"""Load a script of ``experiments/`` as a module (it is not part of the package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_experiment(stem: str) -> ModuleType:
    """``experiments/STEM.py`` as module ``autocomp_STEM``."""
    spec = importlib.util.spec_from_file_location(f"autocomp_{stem}", ROOT / "experiments" / f"{stem}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module
