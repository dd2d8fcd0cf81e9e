"""The console's progress line for a search: trials done, ETA, front size, the trial in flight."""

from __future__ import annotations

import sys
import time

import optuna

from autocomp.study.create import pareto_trials


class ProgressLine:
    """Trials done, elapsed time, ETA and the current front size, after every trial; during a
    trial, its fine-tune step and images/s."""

    def __init__(self, total: int) -> None:
        from tqdm import tqdm

        self.tqdm = tqdm(total=total, unit="trial", file=sys.stderr, dynamic_ncols=True,
                         bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]")
        self.last = ""
        self._shown = 0.0

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.tqdm.update(1)
        self.last = f"front {len(pareto_trials(study))}, last #{trial.number} {trial.state.name.lower()}"
        self.tqdm.set_postfix_str(self.last)

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
