"""``autocomp spaces list | show NAME | check FILE --model SPEC``."""

from __future__ import annotations

import argparse

from autocomp.errors import AutocompError
from autocomp.space import library, load_space


def run(args: argparse.Namespace) -> int:
    if args.spaces_command == "list":
        for name, path in library().items():
            space = load_space(str(path))
            print(f"{name:16s} {space.description}")
        return 0
    if args.spaces_command == "show":
        spaces = library()
        if args.name not in spaces:
            raise AutocompError(f"no shipped space {args.name!r} (shipped: {', '.join(spaces)})")
        print(spaces[args.name].read_text(encoding="utf-8"), end="")
        return 0
    return _check(args)


def _check(args: argparse.Namespace) -> int:
    import torch

    from autocomp.compress import output_layers
    from autocomp.methods.registry import compute_layers
    from autocomp.models import build_model

    space = load_space(args.file)
    shape = _input_shape(args.input_shape, args.model)
    model = build_model(args.model, args.num_classes, shape).eval()
    outputs = output_layers(model, torch.zeros(1, *shape))
    layers = compute_layers(model)
    hits: dict[str, list[str]] = {}
    for name, module in layers.items():
        rule = space.rule_for(name, module)
        label = "(no rule: left alone)" if rule is None else ("default" if rule.selector == "default" else rule.label)
        if rule is not None and rule.skip:
            label += " [skip]"
        hits.setdefault(label, []).append(name)
    print(f"{space.source}: {len(layers)} compute layers in {args.model}")
    for label, names in hits.items():
        shown = ", ".join(names[:8]) + (f" ... (+{len(names) - 8})" if len(names) > 8 else "")
        print(f"  {label}: {len(names)} layers: {shown}")
    dims = space.dimensions(model, outputs)
    print(f"search dimensions: {len(dims)}")
    for rule in space.unused_rules(model):
        print(f"warning: {rule.label} hits no layer of {args.model}")
    return 0


def _input_shape(text: str | None, model: str) -> tuple[int, ...]:
    if text:
        try:
            shape = tuple(int(x) for x in text.split(","))
        except ValueError:
            raise AutocompError(f"--input-shape must be C,H,W integers, got {text!r}") from None
        if len(shape) != 3 or min(shape) < 1:
            raise AutocompError(f"--input-shape must be three positive integers C,H,W, got {text!r}")
        return shape
    if model == "digits_cnn":
        return (1, 8, 8)
    if model in ("lenet5", "lenet300"):
        return (1, 28, 28)
    return (3, 64, 64)
