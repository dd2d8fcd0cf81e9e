"""The trial boundary: whatever a trial raises becomes a FAIL with a one-line reason, the study
goes on, the report is written, tracebacks go to the run's log file and never to the console."""

from __future__ import annotations

import csv
from pathlib import Path

import optuna
import pytest

from autocomp.cli import main
from autocomp.errors import TrialFailed
from autocomp.study.failures import common_reasons, failure_reason, stage_of
from autocomp.study.runner import best_student, summary

PICKY = '''
import torch
from torch import nn


class Picky(nn.Module):
    """Checks the type of a layer it owns, as some models do: low rank turns fc1 into a pair."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.fc1 = nn.Linear(64, 48)
        self.fc2 = nn.Linear(48, num_classes)

    def forward(self, x):
        if not isinstance(self.fc1, nn.Linear):
            raise TypeError("fc1 must be an nn.Linear")
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def build(num_classes=10):
    return Picky(num_classes)
'''

SPACE = """version: 1
layers:
  - name: fc1
    rank: [1.0, 0.5]
    bits: [null, 8]
global:
  steps: 10
  batch_size: 32
"""


def test_a_model_whose_compression_raises_fails_those_trials_and_the_study_finishes(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "picky.py").write_text(PICKY)
    (tmp_path / "space.yaml").write_text(SPACE)
    run = tmp_path / "run"
    code = main(["search", "--model", f"{tmp_path / 'picky.py'}:build", "--teacher-epochs", "2", "--space",
                 str(tmp_path / "space.yaml"), "--n-trials", "6", "--baselines", "teacher,svd50,int8",
                 "--run-dir", str(run), "--no-progress", "--train-threads", "1"])
    out, err = capsys.readouterr()
    assert code == 0
    study = optuna.load_study(study_name="picky.build-digits", storage=f"sqlite:///{run / 'study.db'}")
    assert len(study.trials) == 6
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert failed and failed[0].user_attrs.get("baseline") == "svd50"
    # A 4-point space in 6 trials: the sampler proposes finished plans again, failed before any work.
    same = [t for t in failed if t.user_attrs["fail_reason"].startswith("same plan as trial ")]
    for t in same:
        first = study.trials[int(t.user_attrs["fail_reason"].split()[-1])]
        assert first.params == t.params and first.state != optuna.trial.TrialState.FAIL
    for t in [t for t in failed if t not in same]:  # every other one is the rank-0.5 plan, with the reason named
        assert t.user_attrs["plan"]["layers"]["fc1"]["rank"] == 0.5
        assert t.user_attrs["fail_reason"] == "compress failed: TypeError: fc1 must be an nn.Linear"
    assert any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert (run / "report.html").is_file()
    rows = list(csv.DictReader((run / "trials.csv").open()))
    assert sum(r["fail_reason"] == "compress failed: TypeError: fc1 must be an nn.Linear" for r in rows) == len(
        failed) - len(same)
    log = (run / "autocomp.log").read_text()
    assert "Traceback" in log and "raise TypeError" in log
    assert "Traceback" not in out + err  # the console gets the summary only
    assert f"{len(failed)} failed" in out
    assert f"failed ({len(failed) - len(same)}x): compress failed: TypeError: fc1 must be an nn.Linear" in out
    assert str(run / "autocomp.log") in out


def _raise_in(module: str, exc: Exception) -> BaseException:
    """An exception whose traceback passes through a function of the module named ``module``."""
    namespace: dict = {"__name__": module}
    exec("def work(exc):\n    raise exc\n", namespace)  # noqa: S102 - a function living in another module's name
    try:
        namespace["work"](exc)
    except Exception as caught:  # noqa: BLE001
        return caught
    raise AssertionError("unreachable")


@pytest.mark.parametrize("module,stage", [
    ("autocomp.pipeline.compress", "compress"), ("autocomp.methods.structured", "compress"),
    ("autocomp.pipeline.finetune", "fine-tune"), ("autocomp.artifact.qdq", "export"),
    ("autocomp.measure.protocol", "measure"), ("autocomp.study.space", "sampling"),
    ("torch.nn.modules.linear", "trial"),
])
def test_the_stage_is_read_from_the_traceback(module: str, stage: str) -> None:
    exc = _raise_in(module, RuntimeError("mat1 and mat2 shapes cannot be multiplied\n(more detail)"))
    assert stage_of(exc) == stage
    assert failure_reason(exc) == f"{stage} failed: RuntimeError: mat1 and mat2 shapes cannot be multiplied"


def test_known_failures_keep_their_message_and_reasons_stay_one_short_line() -> None:
    assert failure_reason(TrialFailed("trial timed out during fine-tune (step 3 of 10)")) == \
        "trial timed out during fine-tune (step 3 of 10)"
    long = failure_reason(_raise_in("autocomp.pipeline.finetune", ValueError("x" * 1000)))
    assert len(long) == 300 and "\n" not in long
    assert failure_reason(_raise_in("autocomp.pipeline.finetune", KeyError())) == "fine-tune failed: KeyError"


def test_common_reasons_group_what_differs_only_in_numbers() -> None:
    reasons = ["hopeless: 41.4% at step 75 < 51.4%", "hopeless: 12.0% at step 75 < 51.4%",
               "export failed: RuntimeError: disk full", "hopeless: 9.9% at step 50 < 51.4%"]
    assert common_reasons(reasons) == [("hopeless: 41.4% at step 75 < 51.4%", 3),
                                       ("export failed: RuntimeError: disk full", 1)]


def test_summary_counts_each_outcome_with_its_commonest_reasons() -> None:
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    state = optuna.trial.TrialState
    for acc, attrs in ((90.0, {"baseline": "teacher"}), (93.5, {}), (88.0, {})):
        study.add_trial(optuna.trial.create_trial(values=[acc, 1.0, 1.0], user_attrs=attrs))
    for reason in ("hopeless: 10.0% at step 5 < 50.0%", "hopeless: 11.0% at step 5 < 50.0%"):
        study.add_trial(optuna.trial.create_trial(state=state.PRUNED, user_attrs={"fail_reason": reason}))
    study.add_trial(optuna.trial.create_trial(state=state.FAIL, user_attrs={"fail_reason": "export failed: X"}))
    text = summary(study, "s")
    assert text.splitlines()[0] == "6 trials in study 's': 3 complete, 2 stopped early, 1 failed"
    assert "  stopped early (2x): hopeless: 10.0% at step 5 < 50.0%" in text
    assert "  failed (1x): export failed: X" in text
    assert best_student(study) == 93.5  # the teacher's own baseline is no student
