"""The command line: help text and resume (bad input, one line and exit code 2: tests/test_hostile.py)."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import optuna
import pytest

from autocomp.cli.main import build_parser, main
from autocomp.cli.search import flag_of, settings
from autocomp.config import GROUPS, SearchConfig


def test_help_lists_subcommands() -> None:
    out = subprocess.run([sys.executable, "-m", "autocomp.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for command in ("search", "report", "export", "spaces"):
        assert command in out.stdout


def test_help_imports_no_torch() -> None:
    # The search flags come from SearchConfig: reading its fields must not load torch (seconds).
    code = ("import sys; from autocomp.cli.main import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'optuna', 'plotly') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def _search_parser() -> argparse.ArgumentParser:
    return build_parser()._subparsers._group_actions[0].choices["search"]


def test_search_help_documents_every_setting_in_its_group() -> None:
    parser = _search_parser()
    text = " ".join(parser.format_help().split())
    by_dest = {a.dest: a for a in parser._actions}
    for f in fields(SearchConfig):
        assert f.metadata.get("group") in GROUPS and f.metadata.get("help"), f"{f.name}: no group or help"
        action = by_dest.get(f.name)
        assert action is not None and action.option_strings == [flag_of(f)], f"{f.name}: no flag"
        assert " ".join(f.metadata["help"].split()) in text, f"{f.name}: help not shown"
    # Every flag but --config, --no-progress and --help is a field: no flag without a setting.
    assert {a.dest for a in parser._actions} - {f.name for f in fields(SearchConfig)} == {
        "config", "no_progress", "help"}
    # Each group is an argparse group holding exactly its fields, in declaration order.
    shown = {g.title: [a.dest for a in g._group_actions] for g in parser._action_groups}
    for group, description in GROUPS.items():
        assert f"{group} settings: {description}" in text
        assert shown[f"{group} settings"] == [f.name for f in fields(SearchConfig) if f.metadata["group"] == group]


def test_help_states_each_default_the_field_has() -> None:
    for f in fields(SearchConfig):
        if f.default is None or isinstance(f.default, bool):
            continue
        value = re.escape(",".join(f.default) if isinstance(f.default, tuple) else str(f.default))
        assert re.search(rf"(^|[\s(]){value} \(default|\(default:? {value}\b", f.metadata["help"]), \
            f"{f.name}: help does not say the default {f.default}"


def test_every_flag_the_docs_name_exists() -> None:
    # The README's table and docs/cli.md describe flags in prose: a renamed or removed flag fails here.
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices.values()
    known = {o for c in commands for a in c._actions for o in a.option_strings}
    for nested in ("spaces", "device"):  # commands with actions: spaces check, device check
        actions = parser._subparsers._group_actions[0].choices[nested]._subparsers._group_actions[0]
        known |= {o for c in actions.choices.values() for a in c._actions for o in a.option_strings}
    root = Path(__file__).resolve().parents[2]
    for doc in ("README.md", "docs/cli.md"):
        lines = (root / doc).read_text(encoding="utf-8").splitlines()
        named = {f for line in lines if "pytest" not in line for f in re.findall(r"(?<![\w-])--[a-z][a-z-]*", line)}
        assert named and named <= known, f"{doc} names flags autocomp does not have: {sorted(named - known)}"


def test_flags_override_the_config_file_and_switches_set_the_opposite_default(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("model: lenet5\nn_trials: 7\nkeep_artifacts: true\ndownload: true\n")
    args = _search_parser().parse_args(["--config", str(path), "--n-trials", "3", "--no-keep-artifacts",
                                        "--mean", "0.5", "--std", "0.25", "--baselines", "teacher, int4",
                                        "--timeout", "9"])
    got = settings(args)
    assert got == {"model": "lenet5", "n_trials": 3, "keep_artifacts": False, "download": True, "mean": (0.5,),
                   "std": (0.25,), "baselines": ("teacher", "int4"), "timeout": 9.0}
    config = SearchConfig(**got)
    assert config.n_trials == 3 and not config.keep_artifacts and config.download
    # No flags: the dataclass's own defaults, nothing set by the command line.
    assert settings(_search_parser().parse_args([])) == {}
    assert settings(_search_parser().parse_args(["--baselines", ""])) == {"baselines": ()}


def test_a_bad_number_list_names_its_flag(capsys: pytest.CaptureFixture) -> None:
    assert main(["search", "--mean", "0.5,x", "--std", "1"]) == 2
    assert capsys.readouterr().err.strip() == (
        "autocomp: error: --mean: must be comma-separated numbers (one per channel), got '0.5,x'")


def _search(tmp_path: Path, *extra: str) -> int:
    return main(["search", "--run-dir", str(tmp_path / "run"), "--study-name", "s", "--teacher-epochs", "2",
                 "--no-progress", *extra])


@pytest.mark.e2e  # a whole search, twice: with the e2e tests (--all)
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
