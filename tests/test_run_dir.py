"""Nothing is written outside the run directory, and nobody else's files are replaced.

Driven through the real CLI (``autocomp.cli.main``): each refusal is exit 2, ONE stderr line,
and the folder left byte for byte as it was.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from autocomp.api import RUN_MARKER, claim_run_dir
from autocomp.cli import main
from autocomp.config import SearchConfig
from autocomp.errors import AutocompError

TINY = ["--no-profile", "--teacher-epochs", "1", "--n-trials", "1", "--no-progress", "--baselines", "teacher"]


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in folder.rglob("*")}


def _refused(argv: list[str], folder: Path, words: str, capfd: pytest.CaptureFixture) -> str:
    before = _snapshot(folder)
    code = main(argv)
    err = capfd.readouterr().err.strip()
    assert code == 2, f"exit {code}: {err[-2000:]}"
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("autocomp: error: "), err[-2000:]
    assert words in lines[0], lines[0]
    assert _snapshot(folder) == before, "the refused run wrote or changed files"
    return lines[0]


@pytest.mark.parametrize("name", ["..", "."])
def test_a_study_name_that_is_not_a_folder_of_its_own_is_refused(name: str, tmp_path: Path, monkeypatch,
                                                               capfd) -> None:
    # `cd X; autocomp search --study-name ..` wrote study.db, report.html ... straight into X.
    work = tmp_path / "X"
    work.mkdir()
    (work / "report.html").write_text("mine")
    monkeypatch.chdir(work)
    line = _refused(["search", "--study-name", name, *TINY], tmp_path, "study_name", capfd)
    assert "outside runs/" in line


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "a\\b", "a\x00b", "../x"])
def test_config_refuses_study_names_that_are_paths(name: str) -> None:
    with pytest.raises(AutocompError, match="study_name"):
        SearchConfig(study_name=name)


def test_plain_names_with_dots_are_kept() -> None:
    assert SearchConfig(study_name="v1.2").directory == Path("runs/v1.2")
    assert SearchConfig(study_name="...").directory == Path("runs/...")  # an odd but plain folder name


def _foreign(tmp_path: Path) -> Path:
    """A folder holding the user's own files under the names autocomp writes."""
    run = tmp_path / "mine"
    (run / "artifacts").mkdir(parents=True)
    (run / "report.html").write_text("my report")
    (run / "trials.csv").write_text("my,table\n")
    (run / "artifacts" / "trial_00000.acz").write_bytes(b"my model")
    return run


def test_a_run_dir_holding_someone_elses_files_is_refused(tmp_path: Path, capfd) -> None:
    run = _foreign(tmp_path)
    line = _refused(["search", "--run-dir", str(run), "--study-name", "s", *TINY], tmp_path,
                    f"run directory {run} holds report.html, trials.csv, artifacts that autocomp did not write", capfd)
    assert "--overwrite" in line


def test_a_refused_run_in_a_folder_of_other_files_leaves_it_as_it_was(tmp_path: Path, capfd) -> None:
    run = tmp_path / "project"
    run.mkdir()
    (run / "notes.txt").write_text("mine")  # a name a run never writes: the folder may be used
    # Refused once the run has claimed the folder (the checkpoint is read while preparing the teacher).
    _refused(["search", "--run-dir", str(run), "--study-name", "s", "--checkpoint", str(run / "none.pt"), *TINY],
             tmp_path, "checkpoint not found", capfd)


@pytest.mark.e2e  # a whole search, twice: with the e2e tests (--all)
def test_overwrite_writes_into_a_foreign_run_dir_and_marks_it(tmp_path: Path, capfd) -> None:
    run = _foreign(tmp_path)
    (run / "notes.txt").write_text("kept")
    assert main(["search", "--run-dir", str(run), "--study-name", "s", "--overwrite", *TINY]) == 0
    assert (run / "report.html").read_text() != "my report"
    assert (run / "notes.txt").read_text() == "kept"  # a name autocomp does not write is never touched
    assert (run / RUN_MARKER).is_file()
    capfd.readouterr()
    # Marked as autocomp's now: resuming needs no --overwrite.
    assert main(["search", "--run-dir", str(run), "--study-name", "s", *TINY]) == 0, capfd.readouterr().err
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{run / 'study.db'}")
    assert len(study.trials) == 2


def test_which_folders_count_as_autocomps(tmp_path: Path) -> None:
    legacy = tmp_path / "legacy"  # a run made before the marker: its default storage is there
    legacy.mkdir()
    (legacy / "study.db").write_bytes(b"")
    (legacy / "report.html").write_text("x")
    claim_run_dir(legacy)
    assert (legacy / RUN_MARKER).is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    claim_run_dir(empty)
    other = tmp_path / "other"  # files a run never writes do not make a folder someone else's
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    claim_run_dir(other)
    assert (other / "notes.txt").read_text() == "mine"
    with pytest.raises(AutocompError, match="is a file"):
        claim_run_dir(legacy / "study.db")


def test_a_refused_run_takes_back_the_folders_it_made(tmp_path: Path) -> None:
    undo = claim_run_dir(tmp_path / "runs" / "deep" / "s")
    assert (tmp_path / "runs" / "deep" / "s" / RUN_MARKER).is_file()
    undo()
    assert list(tmp_path.iterdir()) == []
    kept = tmp_path / "kept"
    undo = claim_run_dir(kept / "s")
    (kept / "s" / "study.db").write_bytes(b"")  # written by the run before it was refused: kept
    undo()
    assert (kept / "s" / "study.db").is_file()


def test_export_onto_an_existing_file_needs_force(tmp_path: Path, capfd) -> None:
    run = tmp_path / "run"
    assert main(["search", "--run-dir", str(run), "--study-name", "s", *TINY]) == 0
    export = ["export", "--storage", f"sqlite:///{run / 'study.db'}", "--study-name", "s", "--trial", "0",
              "--no-progress"]
    out = tmp_path / "model.acz"
    out.write_bytes(b"my own model")
    capfd.readouterr()
    line = _refused([*export, "--out", str(out)], tmp_path, "exists; pass --force", capfd)
    assert str(out) in line
    out.unlink()
    Path(f"{out}.card.md").write_text("my notes")  # the card beside it is someone's file too
    _refused([*export, "--out", str(out)], tmp_path, f"{out}.card.md exists", capfd)
    assert main([*export, "--out", str(out), "--force"]) == 0
    assert out.read_bytes()[:2] == b"PK" and Path(f"{out}.card.md").read_text().startswith("# autocomp artifact")
    assert not list(tmp_path.rglob("*.part"))
