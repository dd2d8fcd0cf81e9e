"""``autocomp spaces list | show NAME | check [FILE --model SPEC] [--storage URL --study-name NAME]``.

``check`` validates a space against a model before any trial runs: which layers each rule
decides, how many dimensions the search has, and a warning for each rule that decides nothing
(a name or pattern that matches no layer, or a rule whose every layer is taken by a rule of
higher precedence); a layer type the model does not have is only a note, since shipped spaces
name every type. Given a study, it also prints the values the study's per-layer profile
dropped from the space and why (and the values it could not measure).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

from autocomp.errors import AutocompError

if TYPE_CHECKING:
    import optuna

    from autocomp.study.space import Rule, SearchSpace


def add_parser(sub: argparse._SubParsersAction) -> None:
    sp = sub.add_parser("spaces", help="list, show and check search spaces")
    spsub = sp.add_subparsers(dest="spaces_command", required=True, metavar="ACTION")
    spsub.add_parser("list", help="shipped search spaces")
    show = spsub.add_parser("show", help="print a shipped space's YAML")
    show.add_argument("name")
    check = spsub.add_parser("check", help="validate a space against a model: layers per rule, dimensions, warnings; "
                             "with a study, the values its profile dropped and why")
    check.add_argument("file", nargs="?", default=None, help="a YAML file or a shipped name")
    check.add_argument("--model", default="digits_cnn", help="model spec as for search (default digits_cnn)")
    check.add_argument("--input-shape", default=None, help="C,H,W of the model input (default from the model)")
    check.add_argument("--num-classes", type=int, default=10)
    check.add_argument("--model-kwargs", default=None, help="KEY=VALUE,... passed to the model's builder")
    check.add_argument("--storage", default=None, help="Optuna storage URL of a study (with --study-name)")
    check.add_argument("--study-name", default=None, help="a study whose profile's dropped values to print")
    sp.set_defaults(func=run)


def run(args: argparse.Namespace, out: Callable[[str], None] = print) -> int:
    """Dispatch ``args.spaces_command``; returns the exit status."""
    # The study's space module pulls in torch: imported here, so ``autocomp --help`` stays fast.
    from autocomp.study.space import library, load_space

    if args.spaces_command == "list":
        for name, path in library().items():
            space = load_space(str(path))
            out(f"{name:18s} {' '.join(space.description.split())}")
        return 0
    if args.spaces_command == "show":
        spaces = library()
        if args.name not in spaces:
            raise AutocompError(f"no shipped space {args.name!r} (shipped: {', '.join(spaces)})")
        out(spaces[args.name].read_text(encoding="utf-8").rstrip("\n"))
        return 0
    storage, name = getattr(args, "storage", None), getattr(args, "study_name", None)
    if (storage is None) != (name is None):
        raise AutocompError("spaces check: give --storage and --study-name together")
    if args.file is None and storage is None:
        raise AutocompError("spaces check: give a space FILE (or shipped name), or --storage and --study-name")
    study = None
    if storage is not None:  # read first: a wrong URL or name is refused before the space is checked
        from autocomp.study.create import load_existing_study

        study = load_existing_study(storage, name)
    if args.file is not None:
        check(args.file, args.model, args.input_shape, args.num_classes, out, getattr(args, "model_kwargs", None))
    if study is not None:
        profile_drops(study, out)
    return 0


def profile_drops(study: optuna.Study, out: Callable[[str], None] = print) -> None:
    """Print what the study's per-layer profile dropped from the space and why, and what it could not measure."""
    from autocomp.study.records import read_study

    profile, study_name = read_study(study).profile, study.study_name
    if not profile:
        out(f"study {study_name}: no per-layer profile (searched with --no-profile, or made before the profile "
            "was measured): it dropped nothing")
        return
    entries = profile.get("entries") or []
    layers = len({e.get("layer") for e in entries})
    out(f"study {study_name}: per-layer profile of {_n(len(entries), 'value')} on {_n(layers, 'layer')} "
        f"({profile.get('seconds', 0):g} s, {profile.get('samples', '?')} samples)")
    dropped, failed = profile.get("dropped") or [], profile.get("failed") or []
    out(f"dropped {_n(len(dropped), 'value')} from the space" + (":" if dropped else ""))
    for d in dropped:
        out(f"  {d['param']} = {d['value']}: {d['why']}")
    if failed:
        out(f"could not measure {_n(len(failed), 'value')} (kept in the space, never seeded):")
        for f in failed:
            out(f"  {f['layer']}.{f['knob']} = {f['value']}: {f['why']}")


def check(file: str, model_spec: str, input_shape: str | None = None, num_classes: int = 10,
          out: Callable[[str], None] = print, model_kwargs: str | dict | None = None) -> int:
    """Print what ``file`` does to ``model_spec``; warnings for rules that decide no layer."""
    import torch

    from autocomp.config import check_model_kwargs
    from autocomp.models.layers import compute_layers, output_layers
    from autocomp.models.zoo import build_model, size_hint
    from autocomp.study.space import load_space

    space = load_space(file)
    shape = _input_shape(input_shape, model_spec)
    model = build_model(model_spec, num_classes, shape, check_model_kwargs(model_kwargs)).eval()
    try:
        outputs = output_layers(model, torch.zeros(1, *shape))
    except Exception as exc:  # a model that cannot take this input fails in many ways
        raise AutocompError(f"{model_spec} does not accept inputs of shape {shape} ({type(exc).__name__}); "
                            f"pass --input-shape C,H,W{size_hint(model, shape)}") from None
    layers = compute_layers(model)
    params = space.params(model, outputs)
    searched = {p.name for p in params if p.spec.searched}
    hits = space.hits(model)
    out(f"{space.source}: {' '.join(space.description.split()) or '(no description)'}")
    out(f"{model_spec}: {len(layers)} compute layers (Conv2d, Linear); input {','.join(map(str, shape))}")
    for rule in (*space.rules, *([space.default] if space.default else [])):
        names = hits.get(rule.index, [])
        dims = {p.name for p in params if p.name in searched and rule.index == _rule_of(space, p.layer, layers)}
        what = "skip" if rule.skip else (", ".join(rule.knobs) or "no knobs")
        group = f", group {rule.group}" if rule.group else ""
        out(f"  {rule.label} [{what}{group}]: {_n(len(names), 'layer')}, {_n(len(dims), 'dimension')}"
            f"{_listing(names)}")
    alone = [n for n in layers if space.rule_for(n, layers[n]) is None]
    if alone:
        out(f"  no rule (left alone): {_n(len(alone), 'layer')}{_listing(alone)}")
    n_global = sum(k.searched for k in space.globals.values())
    out(f"search dimensions: {len(searched) + n_global} ({len(searched)} per-layer, {n_global} global)")
    c = space.constraints
    limits = [f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in vars(c).items() if v is not None]
    out(f"constraints: {', '.join(limits) if limits else 'none'}")
    for rule in space.unused_rules(model):
        why = _why_unused(space, rule, layers)
        # A generic space names types a model may lack (no depthwise convs in a ResNet): a note.
        # A name or pattern that hits nothing, or a rule shadowed by another, is likely a mistake.
        kind = "note" if rule.selector == "type" and not why else "warning"
        out(f"{kind}: {rule.label} hits no layer of {model_spec}{why}")
    if not params:
        out(f"warning: the space sets no knob on any layer of {model_spec}; no layer is compressed")
    return 0


def _rule_of(space: SearchSpace, layer: str, layers: dict) -> int | None:
    rule = space.rule_for(layer, layers[layer])
    return None if rule is None else rule.index


def _why_unused(space: SearchSpace, rule: Rule, layers: dict) -> str:
    matched = [n for n, m in layers.items() if rule.matches(n, m)]
    if not matched:
        return ""
    winners = sorted({space.rule_for(n, layers[n]).label for n in matched})
    return (f" (it matches {len(matched)}, but each is taken first by a rule of higher precedence or earlier "
            f"in the file: {', '.join(winners)})")


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _listing(names: list[str], shown: int = 6) -> str:
    if not names:
        return ""
    more = f" ... (+{len(names) - shown})" if len(names) > shown else ""
    return ": " + ", ".join(names[:shown]) + more


def _input_shape(text: str | None, model: str) -> tuple[int, ...]:
    if text:
        try:
            shape = tuple(int(x) for x in text.split(","))
        except ValueError:
            raise AutocompError(f"--input-shape must be C,H,W integers, got {text!r}") from None
        if len(shape) != 3 or min(shape) < 1 or max(shape) > 4096:
            raise AutocompError(f"--input-shape must be three integers C,H,W from 1 to 4096, got {text!r}")
        return shape
    if model == "digits_cnn":
        return (1, 8, 8)
    if model in ("lenet5", "lenet300"):
        return (1, 28, 28)
    return (3, 64, 64)
