"""Import a user's ``module:callable`` or ``path/file.py:callable`` (only when the user names it)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

from autocomp.errors import AutocompError


def load_callable(spec: str, what: str) -> Callable:
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise AutocompError(f"{what} {spec!r} must look like module:callable or path/file.py:callable")
    try:
        if target.endswith(".py"):
            path = Path(target)
            if not path.is_file():
                raise AutocompError(f"{what} file not found: {target}")
            name = f"autocomp_user_{abs(hash(str(path.resolve())))}"
            module_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except AutocompError:
        raise
    except Exception as exc:  # the user's code can raise anything while importing
        raise AutocompError(f"cannot import {what} {target!r}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise AutocompError(f"{what} {spec!r}: {target} has no callable {attr!r}")
    return fn
