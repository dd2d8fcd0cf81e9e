"""Why a trial failed, in one line, and where the details go.

A trial that raises anything becomes a FAIL whose reason names the stage, the exception type
and its message (``compress failed: AttributeError: 'Sequential' object has no attribute
'weight'``); the traceback goes to the run's log file (``RUN_DIR/autocomp.log``), never to the
console. Known failures (``TrialFailed``: NaN loss, time-out, an export the graph cannot take)
keep their own message, which already says what happened.

The stage is read from the traceback (the outermost autocomp module the exception passed
through), so the trial code needs no bookkeeping for it.

Example::

    try:
        ...
    except Exception as exc:
        reason = failure_reason(exc)   # "fine-tune failed: RuntimeError: mat1 and mat2 ..."
"""

from __future__ import annotations

import logging
import re
import traceback
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from autocomp.errors import TrialFailed

TRIAL_LOG = logging.getLogger("autocomp.trials")
TRIAL_LOG.addHandler(logging.NullHandler())  # no handler of its own: never Python's stderr fallback
TRIAL_LOG.propagate = False  # tracebacks go to the run's log file only, whatever the root logger does
LOG_NAME = "autocomp.log"
MAX_REASON = 300
# Module prefix -> stage, outermost first: a failure inside a method called by compress is "compress".
STAGES = (
    ("autocomp.study.space", "sampling"),
    ("autocomp.study.space_model", "sampling"),
    ("autocomp.pipeline.compress", "compress"),
    ("autocomp.methods", "compress"),
    ("autocomp.pipeline.finetune", "fine-tune"),
    ("autocomp.artifact", "export"),
    ("autocomp.measure", "measure"),
)


def stage_of(exc: BaseException) -> str:
    """The trial stage the exception came from (``trial`` when no stage module is on its way)."""
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        module = frame.f_globals.get("__name__", "")
        for prefix, stage in STAGES:
            if module == prefix or module.startswith(prefix + "."):
                return stage
    return "trial"


def failure_reason(exc: BaseException) -> str:
    """One line: the known failure's message, or ``STAGE failed: Type: message``."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(exc, TrialFailed):
        return first[:MAX_REASON] or "trial failed"
    detail = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return f"{stage_of(exc)} failed: {detail}"[:MAX_REASON]


class LogFile:
    """Send ``TRIAL_LOG`` to ``RUN_DIR/autocomp.log`` while in the ``with`` block."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOG_NAME
        self._handler: logging.Handler | None = None

    def __enter__(self) -> LogFile:
        self._handler = logging.FileHandler(self.path, encoding="utf-8", delay=True)
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        TRIAL_LOG.addHandler(self._handler)
        TRIAL_LOG.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handler is not None:
            TRIAL_LOG.removeHandler(self._handler)
            self._handler.close()


def common_reasons(reasons: Iterable[str], top: int = 3) -> list[tuple[str, int]]:
    """The most frequent reasons, numbers ignored when grouping (each shown by its first example)."""
    groups: Counter[str] = Counter()
    example: dict[str, str] = {}
    for reason in reasons:
        key = re.sub(r"\d+(\.\d+)?", "#", reason or "no reason recorded")
        groups[key] += 1
        example.setdefault(key, reason or "no reason recorded")
    return [(example[key], count) for key, count in groups.most_common(top)]
