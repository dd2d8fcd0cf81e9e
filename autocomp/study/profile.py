"""The per-layer profile: each value the space offers a layer, measured alone on a real artifact.

Once per study, before the first searched trial, every compute layer is compressed alone with
each value the space offers for each of its knobs (bits, sparsity, channel ratio, rank), with
no fine-tune, and the whole model is exported as the trial's artifact would be. Three numbers
per entry, each from that file:

- **damage**: KL divergence of the artifact's outputs from the teacher artifact's (nats, mean
  over the calibration samples) and the share of samples whose top-1 class it keeps
  (``agreement``, percent);
- **bytes**: the artifact's bytes minus the teacher artifact's (the encoders' own output);
- **latency**: the artifact's time over the teacher's, timed interleaved in shuffled rounds
  (``[median, low, high]``; every value of one layer and knob in the same rounds).

A stepped range is profiled at up to ``MAX_VALUES`` of its values, ends included. The record is
stored on the study (``records.write_profile``), so a resumed run and every worker read the
same numbers. ``autocomp.study.frontier`` adds its entries into predictions for whole plans;
``shaped_space`` drops the values it shows cannot pay.

Example::

    record = measure_profile(bench, space)
    space = shaped_space(space, bench.teacher, bench.outputs, record)
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autocomp.measure.latency import Ratio, paired_rounds
from autocomp.methods.registry import knobs
from autocomp.models.layers import compute_layers
from autocomp.pipeline.workbench import Workbench
from autocomp.plan import LayerPlan, Plan
from autocomp.study.costs import domain_values
from autocomp.study.space import Domain, SearchSpace

VERSION = 1
MAX_VALUES = 5  # values of one stepped range profiled (evenly spread over its changing values, ends included)
SAMPLES = 256  # calibration samples the damage is measured on
WIDE = 1.25  # a whole plan timed wider than this (upper over lower quartile ratio) is timed again, longer


def catastrophic_agreement(num_classes: int) -> float:
    """Agreement (%) under which a value alone wrecks the model: twice chance, and at least 10 %."""
    return max(10.0, 200.0 / max(2, num_classes))


def profiled_values(domain: Domain, knob: str) -> tuple:
    """The changing values of a domain that the profile measures (``()`` for a continuous range)."""
    values = domain_values(domain)
    if values is None:
        return ()
    changing = [v for v in values if knobs()[knob].active(v)]
    if domain.choices is not None or len(changing) <= MAX_VALUES:
        return tuple(changing)
    picks = np.linspace(0, len(changing) - 1, MAX_VALUES).round().astype(int)
    return tuple(changing[i] for i in sorted(set(picks.tolist())))


def candidates(space: SearchSpace, model: nn.Module, outputs: frozenset[str]) -> dict[tuple[str, str], tuple]:
    """``{(layer, knob): values}`` the profile measures: one layer's own searched, enumerable knobs
    (a group's shared value and continuous ranges are left to the search)."""
    out: dict[tuple[str, str], tuple] = {}
    for p in space.params(model, outputs):
        if p.name != f"{p.layer}.{p.knob}" or not p.spec.searched:
            continue
        values = profiled_values(p.spec, p.knob)
        if values:
            out[(p.layer, p.knob)] = values
    return out


def _logits(session: Any, batches: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([session.run(None, {"input": np.ascontiguousarray(b, dtype=np.float32)})[0]
                           for b in batches])


def _damage(reference: np.ndarray, logits: np.ndarray) -> tuple[float, float]:
    """(KL(teacher || artifact) in nats, mean over samples; top-1 agreement in percent)."""
    p = torch.log_softmax(torch.from_numpy(reference).double(), 1)
    q = torch.log_softmax(torch.from_numpy(logits).double(), 1)
    kl = float((p.exp() * (p - q)).sum(1).mean())
    agree = float((reference.argmax(1) == logits.argmax(1)).mean() * 100)
    return max(0.0, kl), agree


def _first_samples(batches: list[np.ndarray], n: int) -> list[np.ndarray]:
    out, kept = [], 0
    for b in batches:
        if kept >= n:
            break
        out.append(b[: n - kept])
        kept += len(out[-1])
    return out


def _untrained(bench: Workbench, plan: Plan, path: Path, reference: np.ndarray,
               batches: list[np.ndarray]) -> tuple[Any, float, float]:
    """``plan`` applied to the teacher with no fine-tune and exported to ``path``: its session,
    KL from the teacher's outputs and top-1 agreement."""
    from autocomp.artifact import export
    from autocomp.measure import session_for
    from autocomp.pipeline.compress import apply

    torch.manual_seed(0)
    student = apply(bench.teacher, plan, bench.example)
    export(student, bench.example, bench.calibration, path, plan.quant_mode)
    session = session_for(path, bench.measure)
    return (session, *_damage(reference, _logits(session, batches)))


def measure_plans(bench: Workbench, plans: list[Plan], progress: Callable | None = None,
                  deadline: float | None = None) -> list[dict[str, Any] | None]:
    """Whole plans measured as the profile measures one value: no fine-tune, on their artifacts.

    Per plan ``{"kl", "agreement", "size_bytes", "latency_ratio": [median, low, high]}``, or
    None when its artifact cannot be built or run. Each is timed beside the teacher alone, as a
    trial is: on LeNet-5, plans timed in groups of 8 beside the teacher measured 0.37x where their
    trials then measured 0.47x; timed alone, 0.46x against 0.46x. With ``deadline`` (a
    ``time.monotonic()``) no plan is started after it: the list then holds the first plans only.
    """
    from autocomp.measure.layer_cost import ratio_record

    batches = _first_samples(bench.calibration, SAMPLES)
    reference = _logits(bench.teacher_session, batches)
    out: list[dict[str, Any] | None] = []
    task = progress("seed candidates", len(plans)) if progress else None
    with tempfile.TemporaryDirectory(prefix="autocomp-seeds-") as tmp:
        for i, plan in enumerate(plans):
            if deadline is not None and time.monotonic() >= deadline:
                break
            if task:
                task.update(1)
            path = Path(tmp, f"{i}.acz")
            try:
                session, kl, agree = _untrained(bench, plan, path, reference, batches)
            except Exception:  # noqa: BLE001 - a plan that cannot be built is not a seed
                out.append(None)
                continue
            out.append({"kl": round(kl, 6), "agreement": round(agree, 2), "size_bytes": path.stat().st_size,
                        "latency_ratio": ratio_record(_ratio_to_teacher(bench, session))})
            del session
    if task:
        task.close()
    return out


def _ratio_to_teacher(bench: Workbench, session: Any) -> Ratio:
    """The session's time over the teacher's, timed beside it alone; timed once more, 4x as long,
    when the rounds spread wider than ``WIDE`` (a busy host: on ResNet-18 a seed measured 0.25x
    with its upper quartile at 0.76x, and its trial then 0.73x). The tighter of the two is kept.
    Each is timed again while the host ran slower than the teacher's fastest (``bench.pace``)."""
    m = bench.measure
    best = None
    for seconds in (m.min_seconds, 4 * m.min_seconds):
        rounds, _ = bench.pace.rounds(lambda s=seconds: paired_rounds(
            [session, bench.teacher_session], tuple(bench.data.input_shape), m.batch, min_runs=m.min_runs,
            min_seconds=s), teacher=1)
        ratio = rounds.ratio(0, 1, m.min_spread)
        if best is None or ratio.high / ratio.low < best.high / best.low:
            best = ratio
        if best.high <= WIDE * best.low:
            break
    return best


def _macs(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """Multiply-accumulates per sample of each compute layer (output elements x weights per output)."""
    layers, out = compute_layers(model), {}

    def hook(name: str) -> Callable:
        def record(module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            w = module.weight
            out[name] = out.get(name, 0) + output.numel() // output.shape[0] * (w.numel() // w.shape[0])
        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in layers.items()]
    try:
        with torch.no_grad():
            model(example[:1])
    finally:
        for h in handles:
            h.remove()
    return out


def profile_order(model: nn.Module, example: torch.Tensor, todo: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The ``(layer, knob)`` groups in the order a deadline should keep them: layers alternately
    by weight bytes and by multiply-accumulates, largest first (where the bytes and the time
    are), each layer's knobs together in their own order."""
    layers = compute_layers(model)
    macs = _macs(model, example)
    names = list(dict.fromkeys(layer for layer, _ in todo))
    by_bytes = sorted(names, key=lambda n: -sum(p.numel() for p in layers[n].parameters()))
    by_macs = sorted(names, key=lambda n: -macs.get(n, 0))
    ranked = list(dict.fromkeys(n for pair in zip(by_bytes, by_macs, strict=True) for n in pair))
    return sorted(todo, key=lambda group: ranked.index(group[0]))


def measure_profile(bench: Workbench, space: SearchSpace, progress: Callable | None = None,
                    deadline: float | None = None) -> dict[str, Any]:
    """The profile record of ``space`` on the bench's teacher, measured on its runtime.

    A value whose artifact cannot be built or run is left out with its reason (``failed``):
    nothing is known about it, so it is neither dropped nor seeded. With ``deadline`` (a
    ``time.monotonic()``), layers are measured in ``profile_order`` and none is started after
    it: the rest are ``unprofiled`` (kept in the space as written, never seeded). Entries are
    stored in the model's order either way.
    """
    started = time.monotonic()
    todo = candidates(space, bench.teacher, bench.outputs)
    order = list(todo) if deadline is None else profile_order(bench.teacher, bench.example, list(todo))
    batches = _first_samples(bench.calibration, SAMPLES)
    reference = _logits(bench.teacher_session, batches)
    teacher_bytes = bench.teacher_path.stat().st_size
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    failed: list[dict[str, Any]] = []
    unprofiled: list[dict[str, Any]] = []
    task = progress("per-layer profile", sum(len(v) for v in todo.values())) if progress else None
    with tempfile.TemporaryDirectory(prefix="autocomp-profile-") as tmp:
        for i, (layer, knob) in enumerate(order):
            if deadline is not None and time.monotonic() >= deadline:
                unprofiled.append({"layer": layer, "knob": knob, "values": len(todo[(layer, knob)])})
                continue
            groups[(layer, knob)] = _measure_group(bench, space, (layer, knob), todo[(layer, knob)],
                                                   Path(tmp, str(i)), (reference, batches), failed, task)
    if task:
        task.close()
    entries = [e for group in todo if group in groups for e in groups[group]]
    layers = compute_layers(bench.teacher)
    return {"version": VERSION, "samples": int(len(reference)), "metric": "kl", "teacher_bytes": teacher_bytes,
            "num_classes": int(reference.shape[1]),
            "layer_bytes": {name: 4 * sum(p.numel() for p in layers[name].parameters()) for name in
                            dict.fromkeys(e["layer"] for e in entries)},
            "entries": entries, "failed": failed, "seconds": round(time.monotonic() - started, 2)} | (
                {"unprofiled": unprofiled} if unprofiled else {})


def _measure_group(bench: Workbench, space: SearchSpace, group: tuple[str, str], values: tuple, stem: Path,
                   calibration: tuple[np.ndarray, list[np.ndarray]], failed: list[dict[str, Any]],
                   task: Any) -> list[dict[str, Any]]:
    """The entries of one layer's knob (``group``), one per value applied alone: each artifact
    built and measured, then all timed in the same rounds beside the teacher. A value that
    cannot be built goes to ``failed``. ``calibration``: the teacher's logits and the batches."""
    from autocomp.measure.layer_cost import ratio_record

    (layer, knob), (reference, batches) = group, calibration
    teacher_bytes, m = bench.teacher_path.stat().st_size, bench.measure
    sessions, measured = [], []
    for j, value in enumerate(values):
        plan = Plan(layers={layer: LayerPlan(**{knob: value})}, quant_mode=space.quant_mode)
        path = stem.with_name(f"{stem.name}_{j}.acz")
        try:
            session, kl, agree = _untrained(bench, plan, path, reference, batches)
        except Exception as exc:  # noqa: BLE001 - one odd value must not stop the study
            failed.append({"layer": layer, "knob": knob, "value": value,
                           "why": f"{type(exc).__name__}: {exc}".splitlines()[0][:200]})
        else:
            sessions.append(session)
            measured.append({"layer": layer, "knob": knob, "param": f"{layer}.{knob}", "value": value,
                             "kl": round(kl, 6), "agreement": round(agree, 2),
                             "bytes": path.stat().st_size - teacher_bytes, "latency": None})
        if task:
            task.update(1)
    if sessions:
        rounds = paired_rounds([*sessions, bench.teacher_session], tuple(bench.data.input_shape), m.batch,
                               min_runs=m.min_runs, min_seconds=m.min_seconds)
        for j, entry in enumerate(measured):
            entry["latency"] = ratio_record(rounds.ratio(j, len(sessions), m.min_spread))
    return measured


def drop_reason(entry: dict[str, Any], floor: float) -> str | None:
    """Why a profiled value is not worth searching, or None: it wrecks the model alone (its
    agreement under ``floor``), or it is not smaller and not measurably faster."""
    if entry["agreement"] < floor:
        return f"alone it keeps the teacher's top-1 on {entry['agreement']:.0f}% of samples (< {floor:.0f}%)"
    latency = entry.get("latency")
    faster = latency is not None and latency[2] < 1.0
    if entry["bytes"] >= 0 and not faster:
        ratio = f"{latency[0]:.2f}x the time" if latency is not None else "untimed"
        return f"not smaller ({entry['bytes']:+,} bytes) and not faster ({ratio})"
    return None


def dropped_values(record: dict[str, Any], kept: Mapping[str, set] | None = None) -> list[dict[str, Any]]:
    """``[{"param", "value", "why"}]``: the values ``shaped_space`` removes, in profile order.
    ``kept`` (``{param: values}``): values the study's baselines stand on, never dropped, so
    every baseline stays a point of the space Optuna's tools see."""
    floor = catastrophic_agreement(record.get("num_classes", 10))
    out = []
    for e in record["entries"]:
        why = None if e["value"] in (kept or {}).get(e["param"], ()) else drop_reason(e, floor)
        if why:
            out.append({"param": e["param"], "value": e["value"], "why": why})
    return out


def shaped_space(space: SearchSpace, model: nn.Module, outputs: frozenset[str],
                 record: dict[str, Any], kept: Mapping[str, set] | None = None) -> SearchSpace:
    """The space without the values the profile shows cannot pay (``dropped_values``).

    A list of choices loses those values. A stepped range keeps its order: it ends below the
    smallest value that wrecks the model alone (values that are not smaller or faster are
    never the end of a range: sparsity and channel cuts always shrink the file). The no-op
    value and the ``kept`` values always stay; a knob left with one value is no longer searched.
    """
    dropped: dict[str, list] = {}
    wrecks: dict[str, list] = {}
    floor = catastrophic_agreement(record.get("num_classes", 10))
    for d in dropped_values(record, kept):
        dropped.setdefault(d["param"], []).append(d["value"])
    for e in record["entries"]:
        if e["value"] in dropped.get(e["param"], ()) and e["agreement"] < floor:
            wrecks.setdefault(e["param"], []).append(e["value"])
    overrides = dict(space.overrides)
    table = knobs()
    for p in space.params(model, outputs):
        if p.name not in dropped or p.name != f"{p.layer}.{p.knob}":
            continue
        spec, noop = p.spec, table[p.knob].noop
        if spec.choices is not None:
            keep = tuple(v for v in spec.choices if v not in dropped[p.name] or not table[p.knob].active(v))
        elif p.name in wrecks and spec.step is not None:
            values = domain_values(spec) or ()
            first_bad = min(wrecks[p.name])
            keep = tuple(v for v in values if v < first_bad or v in (kept or {}).get(p.name, ()))
            if len(keep) > 1:
                overrides[p.name] = dataclasses.replace(spec, high=keep[-1])
                continue
        else:
            continue
        if not keep:
            keep = (noop,)
        overrides[p.name] = Domain(fixed=keep[0]) if len(keep) == 1 else Domain(choices=keep)
    return dataclasses.replace(space, overrides=overrides)
