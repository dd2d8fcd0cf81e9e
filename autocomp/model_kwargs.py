"""A model builder's keyword arguments as a user gives them: ``KEY=VALUE,...`` on the command
line or a mapping in a run file, checked to be plain values a study can record."""

from __future__ import annotations

from typing import Any

import yaml

from autocomp.errors import AutocompError


def parse_model_kwargs(text: str) -> dict[str, Any]:
    """``"image_size=32,input_size=[224,224]"`` -> ``{"image_size": 32, "input_size": [224, 224]}``.

    Values are read as YAML scalars or flow lists; commas inside brackets do not split.
    """
    items, depth, start = [], 0, 0
    for i, ch in enumerate(text + ","):
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            if text[start:i].strip():
                items.append(text[start:i].strip())
            start = i + 1
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise AutocompError(f"model_kwargs: {item!r} is not KEY=VALUE")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw.strip()
        out[key.strip()] = value
    return out


def check_model_kwargs(value: Any) -> dict[str, Any]:
    """A mapping of identifier keys to plain values (numbers, strings, booleans, null, lists)."""
    if value is None:
        return {}
    if isinstance(value, str):
        value = parse_model_kwargs(value)
    if not isinstance(value, dict):
        raise AutocompError(f"model_kwargs: must be a mapping or KEY=VALUE,..., got {type(value).__name__}")

    def plain(v: Any) -> bool:
        if isinstance(v, (list, tuple)):
            return all(plain(x) for x in v)
        return v is None or isinstance(v, (bool, int, float, str))

    for key, v in value.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise AutocompError(f"model_kwargs: {key!r} is not a keyword argument name")
        if not plain(v):
            raise AutocompError(f"model_kwargs: {key}: values are numbers, strings, booleans, null or lists")
    return {k: list(v) if isinstance(v, tuple) else v for k, v in value.items()}
