"""The export card, ``FILE.card.json`` and ``FILE.card.md``: what was written and how it measures.

It names two sizes, each for what it is: ``sized_artifact_bytes``, the ``.acz`` the study
measured (the ``size_bytes`` objective, ``measured_now.size_bytes``), and ``written_file_bytes``,
the files actually written to ``--out`` (an expanded ``.onnx`` or an IR
is larger than the ``.acz``). ``runtime`` is the record of the session on the exported file
itself (for a runtime's own format, the written file's compiled model), not the teacher's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autocomp.artifact.container import atomic_write
from autocomp.measure import Metrics
from autocomp.plan import Plan
from autocomp.runtimes import summary

PROTOCOL = ("accuracy: top-1 of the artifact in {runtime} on the validation split; size: bytes of the .acz "
            "file; latency: median of >= 30 timed runs after warm-up in {runtime}, batch {batch}, "
            "{threads} thread(s)")


@dataclass(frozen=True)
class CardFacts:
    """Everything the card states, gathered by ``export_trial``."""

    study: str
    trial: int
    storage: str
    fmt: str
    out: Path
    files: list[Path]
    sha256: str
    source: str
    recorded_sha256: str | None
    extra_steps: int
    plan: Plan
    metrics: Metrics  # this file, now, on the whole validation split
    in_study: dict[str, Any]  # the trial's stored metrics
    searched_on: str  # where the study's accuracy was measured
    n_val: int
    final_on_search_subset: float | None
    teacher_accuracy_now: float
    teacher_accuracy_in_study: float | None
    preprocessing: dict[str, Any] | None
    data_norm: dict[str, Any] | None
    runtime: dict[str, Any]  # describe() of the exported file's session
    runtime_in_study: dict[str, Any] | None
    timing: dict[str, Any] | None  # the study's timing protocol: input, warm-up, rounds
    written: dict[str, Any] | None  # a runtime's own format loaded back
    batch: int
    threads: int


def make_card(f: CardFacts) -> dict[str, Any]:
    """The card as a JSON-able dict."""
    written_bytes = sum(p.stat().st_size for p in f.files)
    return {
        "study": f.study, "trial": f.trial, "storage": f.storage, "format": f.fmt, "file": str(f.out),
        "files": {str(p): p.stat().st_size for p in f.files},
        "written_file_bytes": written_bytes, "sized_artifact_bytes": f.metrics.size_bytes,
        "sizes": "sized_artifact_bytes: the .acz the study measured (size_bytes); written_file_bytes: "
                 "the files written to --out",
        "artifact_sha256": f.sha256, "artifact_source": f.source,
        "matches_study_artifact": f.sha256 == f.recorded_sha256 if f.recorded_sha256 and not f.extra_steps else None,
        "plan": f.plan.to_dict(), "fine_tune_steps": f.plan.distill.steps + f.extra_steps,
        "accuracy": _accuracy(f), "measured_now": f.metrics.to_dict(), "measured_in_study": f.in_study,
        "teacher_accuracy": f.teacher_accuracy_in_study, "preprocessing": f.preprocessing, "input": f.data_norm,
        "runtime": f.runtime, "runtime_in_study": f.runtime_in_study, "timing": f.timing,
        "written_file": f.written,
        "protocol": PROTOCOL.format(batch=f.batch, threads=f.threads, runtime=summary(f.runtime)),
    }


def _accuracy(f: CardFacts) -> dict[str, Any]:
    whole = f"the whole validation split ({f.n_val} images)"
    accuracy: dict[str, Any] = {
        "search_time": {"value": f.in_study.get("accuracy"), "fine_tune_steps": f.plan.distill.steps,
                        "measured_on": f.searched_on, "teacher": f.teacher_accuracy_in_study},
        "final": {"value": f.metrics.accuracy, "fine_tune_steps": f.plan.distill.steps + f.extra_steps,
                  "measured_on": whole, "teacher": f.teacher_accuracy_now},
    }
    if f.final_on_search_subset is not None:
        accuracy["final_on_search_subset"] = {"value": f.final_on_search_subset, "measured_on": f.searched_on}
    return accuracy


def card_paths(out: Path) -> tuple[Path, Path]:
    """The card files beside ``out``: ``OUT.card.json`` and ``OUT.card.md``."""
    return Path(f"{out}.card.json"), Path(f"{out}.card.md")


def write_card(out: Path, card: dict[str, Any]) -> None:
    """Both card files, each written whole or not at all (no ``.part`` left on a full disk)."""
    as_json, as_md = card_paths(out)
    atomic_write(as_json, lambda p: p.write_text(json.dumps(card, indent=2), encoding="utf-8"))
    atomic_write(as_md, lambda p: p.write_text(markdown(card), encoding="utf-8"))


def summary_line(card: dict[str, Any]) -> str:
    """What ``autocomp export`` prints."""
    s, f, m = card["accuracy"]["search_time"], card["accuracy"]["final"], card["measured_now"]
    return (f"wrote {card['file']} ({card['written_file_bytes']} bytes) and its card ({card['artifact_source']}); "
            f"final accuracy {f['value']:.2f}% on {f['measured_on']} after {f['fine_tune_steps']} fine-tune steps; "
            f"search-time accuracy {_pct(s['value'])} on {s['measured_on']} after {s['fine_tune_steps']} steps; "
            f"sized artifact (.acz) {card['sized_artifact_bytes']} bytes, latency {m['latency_ms']:.4f} ms")


def markdown(card: dict[str, Any]) -> str:
    """The card for people: accuracies, sizes, measurements, preprocessing and the Plan."""
    m, s = card["measured_now"], card["measured_in_study"]
    lines = [
        f"# autocomp artifact: {card['study']} trial {card['trial']}", "",
        f"File: `{card['file']}` ({card['format']}, {card['written_file_bytes']} bytes written; "
        f"{card['artifact_source']})", "",
        f"Sized artifact: the .acz the study measured, {card['sized_artifact_bytes']} bytes (`size_bytes` below); "
        f"the file written is {card['written_file_bytes']} bytes.", "",
        *_accuracy_table(card["accuracy"]),
        "", "## Measured now and in the study", "", "| metric | measured now | in the study |", "|---|---|---|"]
    for key in ("accuracy", "size_bytes", "latency_ms", "latency_ratio", "latency_p90_ms", "params",
                "nonzero_params", "macs"):
        label = "size_bytes (the .acz)" if key == "size_bytes" else key
        lines.append(f"| {label} | {m.get(key)} | {s.get(key)} |")
    w = card.get("written_file")
    if w:
        lines += ["", f"Load it with `{w['load']}`: accuracy {_pct(w['accuracy'])}, the written file's own, as "
                  f"measured above. With the runtime's defaults ({w['runtime_defaults']}) it scores "
                  f"{_pct(w['accuracy_runtime_defaults'])}."]
    pre = card.get("preprocessing") or {}
    lines += ["", "## Input preprocessing (reproduce it on the device)", "",
              f"- eval transform: {pre.get('eval_transform')}",
              f"- mean {pre.get('mean')}, std {pre.get('std')} ({pre.get('normalization')})",
              f"- input shape: {pre.get('input_shape')}",
              "", f"How measured: {card['protocol']}.", "", "Plan:", "", "```json",
              json.dumps(card["plan"], indent=2), "```", ""]
    return "\n".join(lines)


def _accuracy_table(acc: dict[str, Any]) -> list[str]:
    final, search = acc["final"], acc["search_time"]
    lines = ["## Accuracy", "", "| | accuracy % | teacher % | fine-tune steps | measured on |", "|---|---|---|---|---|",
             f"| **final** (this file) | {_num(final['value'])} | {_num(final['teacher'])} | "
             f"{final['fine_tune_steps']} | {final['measured_on']} |",
             f"| search-time (the study's) | {_num(search['value'])} | {_num(search['teacher'])} | "
             f"{search['fine_tune_steps']} | {search['measured_on']} |"]
    if "final_on_search_subset" in acc:
        lines.append(f"| final, on the search-time subset | {_num(acc['final_on_search_subset']['value'])} | | "
                     f"{final['fine_tune_steps']} | {acc['final_on_search_subset']['measured_on']} |")
    return lines


def _pct(value: float | None) -> str:
    return f"{value:.2f}%" if value is not None else "n/a"


def _num(value: float | None) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else "n/a"
