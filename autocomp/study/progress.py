"""The console's progress line for a search: the phase, trials done, the expected end, front
size, the trial in flight."""

from __future__ import annotations

import sys
import time
from datetime import datetime

import optuna

from autocomp.study.create import pareto_trials


class ProgressLine:
    """The phase (``search``, ``promote``) and its expected end (wall clock, when the schedule
    can tell), trials done, elapsed time and the current front size, after every trial; during a
    trial, its fine-tune step and images/s.

    Example::

        bar = ProgressLine(50)
        bar.set_phase("promote", total=47)   # the search stopped at 37 trials, 10 promotions follow
        bar.set_end(time.time() + 600)       # "promote, ends ~14:32; front 9, last #41 complete"
    """

    def __init__(self, total: int, phase: str = "search") -> None:
        from tqdm import tqdm

        self.tqdm = tqdm(total=total, unit="trial", file=sys.stderr, dynamic_ncols=True,
                         bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]")
        self.phase = phase
        self.ends: float | None = None
        self.last = self.head()
        self._shown = 0.0

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.tqdm.update(1)
        self.last = (f"{self.head()}; front {len(pareto_trials(study))}, "
                     f"last #{trial.number} {trial.state.name.lower()}")
        self.tqdm.set_postfix_str(self.last)

    def head(self) -> str:
        """``search`` or ``search, ends ~14:32``."""
        return self.phase + (f", ends ~{clock(self.ends)}" if self.ends is not None else "")

    def set_phase(self, phase: str, total: int | None = None) -> None:
        """A new phase; ``total``: the trials the whole run now expects (the bar's length)."""
        self.phase = phase
        if total is not None:
            self.tqdm.total = total
        self.last = self.head()
        self.tqdm.set_postfix_str(self.last)

    def set_end(self, ends: float | None) -> None:
        """The expected end of the run (``time.time()`` seconds), shown from the next update."""
        self.ends = ends

    def step(self, step: int, steps: int, images_per_s: float) -> None:
        """Fine-tune progress of the trial in flight (at most twice a second)."""
        now = time.monotonic()
        if step != steps and now - self._shown < 0.5:
            return
        self._shown = now
        done = f"{self.last}; " if self.last else ""
        self.tqdm.set_postfix_str(f"{done}fine-tune step {step}/{steps}, {images_per_s:.0f} img/s")

    def evaluating(self, done: int, total: int) -> None:
        """Accuracy of the trial's artifact, as it goes."""
        now = time.monotonic()
        if done != total and now - self._shown < 0.5:
            return
        self._shown = now
        self.tqdm.set_postfix_str(f"{self.last + '; ' if self.last else ''}evaluating {done}/{total}")

    def close(self) -> None:
        self.tqdm.close()


def clock(when: float) -> str:
    """``14:32`` today, ``Tue 09:05`` on another day."""
    at, now = datetime.fromtimestamp(when), datetime.now()
    return at.strftime("%H:%M") if at.date() == now.date() else at.strftime("%a %H:%M")
