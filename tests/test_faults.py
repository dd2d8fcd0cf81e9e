"""A disk that fills or a storage that stops taking writes ends the run in ONE line, with no debris.

The quick tests drive the pieces (the chain a fault arrives in, the atomic writes, the CLI's
line); the e2e ones run real searches on a full tmpfs and on a storage made immutable mid-run
(root ignores file permissions, so ``chattr +i`` is what refuses its writes), each skipped with
the reason where the machine does not allow it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

import autocomp.api
from autocomp.artifact.container import atomic_write
from autocomp.cli import main
from autocomp.errors import StorageFault, storage_fault
from autocomp.pipeline.workbench import Workbench
from autocomp.study.records import read_trial

TINY = ["--teacher-epochs", "1", "--no-progress", "--no-profile"]


def _one_line(capfd: pytest.CaptureFixture, code: int, expected: int = 1) -> str:
    err = capfd.readouterr().err.strip()
    assert code == expected, f"exit {code}: {err[-3000:]}"
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("autocomp: error: "), err[-3000:]
    return lines[0]


def _chained(*excs: BaseException) -> BaseException:
    """``excs[0]`` raised while handling ``excs[1]``, raised while handling ... (as Optuna chains them)."""
    for outer, inner in zip(excs, excs[1:], strict=False):
        outer.__context__ = inner
    return excs[0]


def test_the_cause_is_found_at_the_bottom_of_the_chain() -> None:
    # What a full disk looked like: sqlite -> Optuna's StorageInternalError -> UnboundLocalError.
    internal = type("StorageInternalError", (Exception,), {"__module__": "optuna.exceptions"})
    exc = _chained(UnboundLocalError("updated_state"), internal("An exception is raised during the commit."),
                   sqlite3.OperationalError("database or disk is full"))
    fault = storage_fault(exc)
    assert fault is not None and fault.exit_code == 1
    assert "database or disk is full" in str(fault) and "resume" in str(fault)
    full = storage_fault(_chained(AssertionError("Should not reach."),
                                  OSError(errno.ENOSPC, "No space left on device", "runs/x/a.acz")))
    assert full is not None and full.exit_code == 1 and "disk full writing runs/x/a.acz" in str(full)
    read_only = storage_fault(OSError(errno.EROFS, "Read-only file system", "out/report.html"))
    assert read_only is not None and read_only.exit_code == 2  # where the user chose to write
    assert storage_fault(_chained(ValueError("a bug"), KeyError("k"))) is None
    assert storage_fault(FileNotFoundError(errno.ENOENT, "gone", "x")) is None  # not a disk fault
    loop = ValueError("self")
    loop.__context__ = loop
    assert storage_fault(loop) is None


def _fills_disk(after: int) -> object:
    def write(p: Path) -> None:
        p.write_bytes(b"x" * after)
        raise OSError(errno.ENOSPC, "No space left on device")

    return write


def test_a_failed_atomic_write_leaves_neither_part_nor_a_changed_file(tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    target.write_text("the last good report")
    with pytest.raises(StorageFault, match=f"disk full writing {target}"):
        atomic_write(target, _fills_disk(1000))
    with pytest.raises(RuntimeError, match="a bug"):  # other errors pass through, still cleaned up
        atomic_write(target, lambda p: (p.write_text("half"), (_ for _ in ()).throw(RuntimeError("a bug"))))
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, lambda p: (p.write_text("half"), (_ for _ in ()).throw(KeyboardInterrupt())))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
    assert target.read_text() == "the last good report"
    atomic_write(target, lambda p: p.write_text("new"), part=".7.part")
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_a_fault_anywhere_in_a_search_is_one_line(tmp_path: Path, monkeypatch, capfd) -> None:
    internal = type("StorageInternalError", (Exception,), {"__module__": "optuna.exceptions"})

    def optimize(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise _chained(UnboundLocalError("cannot access local variable 'updated_state'"), internal("commit"),
                       sqlite3.OperationalError("attempt to write a readonly database"))

    monkeypatch.setattr(autocomp.api, "optimize", optimize)
    line = _one_line(capfd, main(["search", "--run-dir", str(tmp_path / "run"), "--n-trials", "1", *TINY]))
    assert "storage stopped accepting writes (attempt to write a readonly database)" in line
    monkeypatch.setattr(autocomp.api, "optimize", lambda *a, **k: (_ for _ in ()).throw(ValueError("a bug")))
    with pytest.raises(ValueError, match="a bug"):  # a bug keeps its traceback: it is not a disk fault
        main(["search", "--run-dir", str(tmp_path / "run"), "--n-trials", "1", *TINY])


# --- real faults ------------------------------------------------------------------------------


@contextlib.contextmanager
def _tmpfs(folder: Path, size: str) -> Iterator[Path]:
    folder.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                              capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("no mount command on this machine")
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def _parts(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if ".part" in p.name]


def _kept_artifacts_match(storage: str) -> int:
    study = optuna.load_study(study_name="s", storage=storage)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    for t in done:
        kept = read_trial(t).artifact
        assert hashlib.sha256(Path(kept.path).read_bytes()).hexdigest() == kept.sha256, t.number
    return len(done)


@pytest.mark.e2e
def test_a_full_disk_ends_in_one_line_and_resumes_once_space_is_freed(tmp_path: Path, capfd) -> None:
    with _tmpfs(tmp_path / "disk", "600k") as disk:
        # Ballast leaves ~350 KB: the study and a few artifacts fit, then the disk is full.
        (disk / "ballast").write_bytes(b"\0" * 250_000)
        run = disk / "run"
        storage = f"sqlite:///{run / 'study.db'}"
        code = main(["search", "--run-dir", str(run), "--study-name", "s", "--n-trials", "30", *TINY])
        line = _one_line(capfd, code)
        assert "disk full" in line or "storage stopped accepting writes" in line, line
        assert "resume" in line and not _parts(disk)
        finished = _kept_artifacts_match(storage)
        assert finished >= 1  # the disk filled mid-search, not before it began
        # The report needs megabytes (plotly inline): still full, still one line and no debris.
        line = _one_line(capfd, main(["report", "--storage", storage, "--study-name", "s", "--out", str(run)]))
        assert f"disk full writing {run}" in line and not _parts(disk)
        (disk / "ballast").unlink()
        subprocess.run(["mount", "-o", "remount,size=20m", str(disk)], check=True)
        assert main(["search", "--run-dir", str(run), "--study-name", "s", "--n-trials", "1", *TINY]) == 0, \
            capfd.readouterr().err[-3000:]
        assert _kept_artifacts_match(storage) >= finished + 1 and (run / "report.html").is_file()
        assert not _parts(disk)


def _immutable(*paths: Path, on: bool) -> bool:
    done = subprocess.run(["chattr", "+i" if on else "-i", *map(str, paths)], capture_output=True)
    return done.returncode == 0


@pytest.mark.e2e
def test_a_storage_that_turns_read_only_mid_run_ends_in_one_line(tmp_path: Path, monkeypatch, capfd) -> None:
    if shutil.which("chattr") is None:
        pytest.skip("no chattr here: cannot make a file refuse writes to root")
    probe = tmp_path / "probe"
    probe.write_text("")
    if not _immutable(probe, on=True):
        pytest.skip("chattr +i is not allowed here (needs root and a file system that supports it)")
    _immutable(probe, on=False)
    store = tmp_path / "store"
    store.mkdir()
    db = store / "study.db"
    run_trial = Workbench.run
    locked: list[Path] = []

    def run_then_lock(self, plan, path, deadline=None, on_step=None):  # noqa: ANN001, ANN202
        result = run_trial(self, plan, path, deadline, on_step)
        if not locked:  # after the first trial's work, before its result is stored
            assert _immutable(db, store, on=True)
            locked.extend([db, store])
        return result

    monkeypatch.setattr(Workbench, "run", run_then_lock)
    try:
        code = main(["search", "--run-dir", str(tmp_path / "run"), "--storage", f"sqlite:///{db}",
                     "--study-name", "s", "--n-trials", "3", *TINY])
        line = _one_line(capfd, code)
    finally:
        _immutable(*locked, on=False)
    assert "storage stopped accepting writes" in line and "resume" in line, line
    assert locked and not _parts(tmp_path)
    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_the_trial_in_flight_is_failed_with_the_fault_where_the_storage_still_takes_it(
        tmp_path: Path, monkeypatch, capfd) -> None:
    """A full artifact disk with the study elsewhere: the run ends in one line, and the trial it
    stopped is FAIL with that line as its reason, not left RUNNING for the next resume."""
    real = Workbench.run

    def run(self, plan, path, deadline=None, on_step=None):  # noqa: ANN001, ANN202
        if Path(path).stem.endswith("1"):
            raise StorageFault("disk full writing trial_00001.acz: free space on that disk")
        return real(self, plan, path, deadline, on_step)

    monkeypatch.setattr(Workbench, "run", run)
    code = main(["search", "--run-dir", str(tmp_path / "run"), "--study-name", "s", "--n-trials", "3", *TINY])
    assert code == 1 and "disk full writing trial_00001.acz" in _one_line(capfd, code)
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    states = {t.number: t.state for t in study.trials}
    assert states[1] == optuna.trial.TrialState.FAIL and optuna.trial.TrialState.RUNNING not in states.values()
    assert study.trials[1].user_attrs["fail_reason"].startswith("disk full writing trial_00001.acz")
