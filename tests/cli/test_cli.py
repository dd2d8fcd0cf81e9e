"""The command line: help text and resume (bad input, one line and exit code 2: tests/test_hostile.py)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import optuna
import pytest

from autocomp.cli.main import SEARCH_FLAGS, build_parser, main
from autocomp.config import SearchConfig


def test_help_lists_subcommands() -> None:
    out = subprocess.run([sys.executable, "-m", "autocomp.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for command in ("search", "report", "export", "spaces"):
        assert command in out.stdout


def test_search_help_documents_every_setting() -> None:
    text = build_parser()._subparsers._group_actions[0].choices["search"].format_help()
    flags = {f[2:].replace("-", "_") for f, _, _ in SEARCH_FLAGS} | {"download", "allow_empty_space"}
    missing = {f.name for f in fields(SearchConfig)} - flags - {"keep_artifacts"}
    assert not missing, f"settings with no flag: {missing}"
    for flag, _, help_text in SEARCH_FLAGS:
        assert flag in text and help_text.split()[0] in text
    assert "--no-keep-artifacts" in text and "--allow-empty-space" in text


def _search(tmp_path: Path, *extra: str) -> int:
    return main(["search", "--run-dir", str(tmp_path / "run"), "--study-name", "s", "--teacher-epochs", "2",
                 "--no-progress", *extra])


def test_running_twice_resumes_one_study(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert _search(tmp_path, "--n-trials", "3") == 0
    assert _search(tmp_path, "--n-trials", "3") == 0
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    assert len(study.trials) == 6
    # Finished = complete, or stopped early as hopeless (pruned); nothing failed or is left running.
    assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in study.trials)
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) >= 3
    assert all("plan" in t.user_attrs for t in study.trials)
    assert [t.user_attrs.get("baseline") for t in study.trials[:3]] == ["teacher", "int8", "prune50"]
    assert sum(t.user_attrs.get("baseline") == "teacher" for t in study.trials) == 1  # baselines not re-enqueued
    # 3 ran, and the 4th default baseline (channels50) was enqueued, waiting for the next run.
    assert "resumed with 4 trials" in capsys.readouterr().out
    csv = (tmp_path / "run" / "trials.csv").read_text().splitlines()
    assert len(csv) == 1 + 6
    assert (tmp_path / "run" / "report.html").stat().st_size > 10_000
