"""Import a user's ``module:callable`` or ``path/file.py:callable`` (only when the user names it)."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
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


def source_digest(spec: str) -> str | None:
    """A short hash of the file that defines a ``module:callable`` / ``file.py:callable`` builder.

    Part of the teacher cache key and of a study's identity, so editing a builder (even without
    changing any shape, ReLU -> Tanh) never reuses a stale teacher or mixes two teachers in one
    study. None for specs that are not user code (builtins, ``torchvision:NAME``).
    """
    if spec.startswith("torchvision:") or ":" not in spec:
        return None
    fn = load_callable(spec, what="model")
    try:
        path = inspect.getsourcefile(fn) or inspect.getfile(fn)
        data = Path(path).read_bytes()
    except (TypeError, OSError):  # a builtin or C function: its identity is its qualified name
        data = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', spec)}".encode()
    return hashlib.sha256(data).hexdigest()[:16]
