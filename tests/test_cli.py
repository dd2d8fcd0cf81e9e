"""The command line: help text, resume, and one clear line with exit code 2 for bad input."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import optuna
import pytest
import torch

from autocomp.cli import SEARCH_FLAGS, build_parser, main
from autocomp.config import SearchConfig


def test_help_lists_subcommands() -> None:
    out = subprocess.run([sys.executable, "-m", "autocomp.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for command in ("search", "report", "export", "spaces"):
        assert command in out.stdout


def test_search_help_documents_every_setting() -> None:
    text = build_parser()._subparsers._group_actions[0].choices["search"].format_help()
    flags = {f[2:].replace("-", "_") for f, _, _ in SEARCH_FLAGS} | {"download"}
    missing = {f.name for f in fields(SearchConfig)} - flags - {"keep_artifacts"}
    assert not missing, f"settings with no flag: {missing}"
    for flag, _, help_text in SEARCH_FLAGS:
        assert flag in text and help_text.split()[0] in text
    assert "--no-keep-artifacts" in text


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


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def bad_inputs(tmp: Path) -> dict[str, list[str]]:
    torch.save({"weight": torch.zeros(3)}, tmp / "wrong.pt")
    (tmp / "garbage.pt").write_bytes(b"not a checkpoint")
    torch.save(torch.nn.Linear(2, 2), tmp / "pickled.pt")
    _write(tmp / "models.py", "import torch\n"
           "def raises():\n    raise ValueError('boom')\n"
           "def linear():\n    return torch.nn.Linear(10, 10)\n"
           "def identity():\n    return torch.nn.Identity()\n"
           "def not_module():\n    return 3\n")
    (tmp / "empty").mkdir()
    return {
        "unknown model": ["--model", "resnet9000"],
        "unknown torchvision model": ["--model", "torchvision:notamodel"],
        "missing model file": ["--model", str(tmp / "nope.py") + ":build"],
        "missing module": ["--model", "no_such_pkg.mod:build"],
        "missing builder": ["--model", str(tmp / "models.py") + ":absent"],
        "builder raises": ["--model", str(tmp / "models.py") + ":raises"],
        "builder returns non-module": ["--model", str(tmp / "models.py") + ":not_module"],
        "model input mismatch": ["--model", str(tmp / "models.py") + ":linear"],
        "model output not logits": ["--model", str(tmp / "models.py") + ":identity"],
        "missing checkpoint": ["--checkpoint", str(tmp / "none.pt")],
        "corrupt checkpoint": ["--checkpoint", str(tmp / "garbage.pt")],
        "pickled object checkpoint": ["--checkpoint", str(tmp / "pickled.pt")],
        "checkpoint does not fit": ["--checkpoint", str(tmp / "wrong.pt")],
        "unknown dataset": ["--dataset", "imagenet-9000"],
        "torchvision dataset without dir": ["--dataset", "mnist"],
        "torchvision dataset not there": ["--dataset", "mnist", "--data-dir", str(tmp / "empty")],
        "unknown space": ["--space", "no-such-space"],
        "space with unknown key": ["--space", _write(tmp / "s.yaml", "version: 1\nlayerz: []\n")],
        "space not YAML": ["--space", _write(tmp / "t.yaml", "version: [1\n")],
        "missing config": ["--config", str(tmp / "none.yaml")],
        "config unknown key": ["--config", _write(tmp / "c.yaml", "modle: lenet5\n")],
        "config wrong type": ["--config", _write(tmp / "d.yaml", "n_trials: many\n")],
        "bad sampler": ["--sampler", "bogus"],
        "negative trials": ["--n-trials", "-1"],
        "bad channels": ["--channels", "2"],
        "bad device": ["--device", "tpu"],
        "bad study name": ["--study-name", "a/b"],
        "bad baseline": ["--baselines", "teacher,int3"],
        "unreachable storage": ["--storage", "postgresql://u:p@127.0.0.1:9/none"],
        "storage not a URL": ["--storage", "not-a-url"],
    }


def test_bad_inputs_print_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cases = bad_inputs(tmp_path)
    assert len(cases) >= 20
    for label, args in cases.items():
        run_dir = tmp_path / f"run-{abs(hash(label))}"
        argv = ["search", "--run-dir", str(run_dir), "--teacher-epochs", "1", "--n-trials", "1", "--no-progress"]
        if "--study-name" not in args:
            argv += ["--study-name", "s"]
        code = main(argv + args)
        err = capsys.readouterr().err.strip()
        assert code == 2, f"{label}: exit {code}, stderr {err!r}"
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("autocomp: error: "), f"{label}: {err!r}"
        assert not run_dir.exists(), f"{label}: left {list(run_dir.rglob('*'))}"
