"""Overnight and distributed runs: kills, failures and many workers lose no work."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch

from autocomp.api import run_search
from autocomp.config import SearchConfig
from autocomp.pipeline import finetune as finetune_module
from autocomp.pipeline import workbench as trial_module
from autocomp.pipeline.workbench import Workbench

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
CLI = [sys.executable, "-m", "autocomp.cli", "search", "--no-profile", "--teacher-epochs", "2", "--no-progress",
       "--train-threads", "1"]


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    storage = optuna.storages.get_storage(url) if not url.startswith("journal:") else _journal(url)
    try:
        return optuna.load_study(study_name=name, storage=storage).trials
    except KeyError:  # not created yet
        return []


def _journal(url: str):
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    return JournalStorage(JournalFileBackend(url.removeprefix("journal:")))


def _finished(url: str, name: str) -> set[int]:
    return {t.number for t in _trials(url, name) if t.state in FINISHED}


@pytest.mark.e2e
def test_sigkill_at_random_moments_loses_no_finished_trial(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    cmd = CLI + ["--storage", url, "--study-name", "k", "--run-dir", str(tmp_path / "run"), "--heartbeat", "1"]
    rng = random.Random(7)
    seen: set[int] = set()
    for _ in range(3):
        proc = subprocess.Popen(cmd + ["--n-trials", "1000"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        target, deadline = len(seen) + 2, time.monotonic() + 180
        with contextlib.suppress(Exception):  # the database may be busy for a moment
            while len(_finished(url, "k")) < target and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.2)
        time.sleep(rng.uniform(0.0, 0.6))  # land anywhere inside a trial
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done = _finished(url, "k")
        assert seen <= done, f"finished trials lost: {seen - done}"
        assert len(done) >= target
        seen = done
    time.sleep(3.5)  # > 3 heartbeats: trials the kills left RUNNING are now stale
    subprocess.run(cmd + ["--n-trials", "3"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    trials = _trials(url, "k")
    done = {t.number for t in trials if t.state in FINISHED}
    assert seen <= done
    assert len(done) == len(seen) + 3  # the final run added exactly what it was asked for
    assert not [t.number for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    assert all("plan" in t.user_attrs for t in trials if t.state in FINISHED)
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert all(t.user_attrs.get("fail_reason") for t in failed), "a FAIL trial without its reason"


@pytest.mark.e2e  # a whole search with two faults injected (7 s): with the e2e tests
def test_nan_loss_and_export_error_fail_their_trials_only(tmp_path: Path, tiny_data, monkeypatch) -> None:
    from tiny_models import tiny_cnn

    real_run = Workbench.run

    def run(self, plan, path, deadline=None, on_step=None):  # noqa: ANN001, ANN202
        number = int(Path(path).stem.split("_")[1])
        with pytest.MonkeyPatch.context() as mp:
            if number == 1:
                mp.setattr(finetune_module, "kd_loss", lambda *a, **k: torch.tensor(float("nan"), requires_grad=True))
            if number == 2:
                mp.setattr(trial_module, "export", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("disk full")))
            return real_run(self, plan, path, deadline, on_step)

    monkeypatch.setattr(Workbench, "run", run)
    torch.manual_seed(0)
    config = SearchConfig(model="python", dataset="python", n_trials=4, storage=f"sqlite:///{tmp_path / 'f.db'}",
                          study_name="f", run_dir=str(tmp_path), baselines=("teacher", "int8", "prune50"))
    study = run_search(config, teacher=tiny_cnn().eval(), data=tiny_data, progress=False, log=lambda s: None)
    states = [t.state for t in study.trials]
    assert states[1] == states[2] == optuna.trial.TrialState.FAIL
    assert states[0] == states[3] == optuna.trial.TrialState.COMPLETE
    assert "loss diverged (nan)" in study.trials[1].user_attrs["fail_reason"]
    assert study.trials[2].user_attrs["fail_reason"] == "export failed: RuntimeError: disk full"
    table = (tmp_path / "trials.csv").read_text()
    assert "disk full" in table and "diverged" in table


def _worker(url: str, tmp_path: Path, n_trials: int) -> subprocess.Popen:
    """One worker: the autocomp process itself (no wrapper), so a SIGKILL lands on it."""
    cmd = CLI + ["--storage", url, "--study-name", "w", "--run-dir", str(tmp_path / "run"), "--n-trials",
                 str(n_trials), "--heartbeat", "1"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _workers(url: str, tmp_path: Path, n_workers: int, n_each: int, kill: int = 0) -> optuna.Study:
    """``n_workers`` on one study; the first ``kill`` of them SIGKILLed once each, at a random
    moment after the study has a few more finished trials, and started again."""
    procs = [_worker(url, tmp_path, n_each) for _ in range(n_workers)]
    rng = random.Random(20)
    for victim in range(kill):
        target, deadline = 3 * (victim + 1), time.monotonic() + 300
        with contextlib.suppress(Exception):  # the study may not exist yet, or the database be busy
            while len(_finished(url, "w")) < target and time.monotonic() < deadline:
                time.sleep(0.2)
        time.sleep(rng.uniform(0.0, 1.0))  # land anywhere inside a trial
        procs[victim].send_signal(signal.SIGKILL)
        procs[victim].wait()
        procs.append(_worker(url, tmp_path, n_each))  # restarted
    for p in procs[kill:]:
        _, err = p.communicate(timeout=400)
        assert p.returncode == 0, err[-2000:]
    storage = optuna.storages.get_storage(url) if not url.startswith("journal:") else _journal(url)
    return optuna.load_study(study_name="w", storage=storage)


def _check_shared_study(study: optuna.Study, url: str, at_least: int) -> None:
    """Issue 20's done-means: no plan COMPLETE twice, nothing RUNNING, every FAIL with its reason,
    every artifact its recorded sha256, every baseline complete once. ``at_least`` counts finished
    trials: a sampled plan stopped early as hopeless (PRUNED) is a result kept, as a COMPLETE one."""
    from autocomp.study.audit import audit_study

    audit = audit_study(study, url, expected_baselines=SearchConfig().baselines)
    assert audit.clean, audit.line()
    assert audit.complete + audit.stopped >= at_least, audit.line()
    assert audit.sha256_checked == audit.complete, audit.line()
    assert len({t.number for t in study.trials}) == len(study.trials)
    assert all("plan" in t.user_attrs for t in study.trials if t.state in FINISHED)
    assert all(not t.user_attrs.get("fail_reason") for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE)


@pytest.mark.e2e
def test_workers_share_a_journal_file(tmp_path: Path) -> None:
    url = f"journal:{tmp_path / 'study.log'}"
    _check_shared_study(_workers(url, tmp_path, n_workers=3, n_each=3), url, at_least=7)


def _postgres_or_sqlite(tmp_path: Path) -> str:
    """PostgreSQL where AUTOCOMP_TEST_POSTGRES names one (.ci/run starts it; CI must have it), else SQLite."""
    url = os.environ.get("AUTOCOMP_TEST_POSTGRES")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("CI must provide AUTOCOMP_TEST_POSTGRES (.ci/run starts a server)")
        return f"sqlite:///{tmp_path / 'w.db'}"
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    with engine.begin() as conn:  # a clean database: drop Optuna's tables from earlier runs
        conn.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
    engine.dispose()
    return url


@pytest.mark.e2e
def test_four_workers_two_of_them_killed_and_restarted(tmp_path: Path) -> None:
    url = _postgres_or_sqlite(tmp_path)
    study = _workers(url, tmp_path, n_workers=4, n_each=5, kill=2)
    _check_shared_study(study, url, at_least=16)
    killed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL
              and t.user_attrs["fail_reason"].startswith("its process")]
    assert len(killed) <= 2  # each kill leaves at most its trial in flight, failed with the reason


@pytest.mark.e2e
def test_ctrl_c_keeps_finished_trials_and_writes_the_report(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    # SIGINT as a terminal delivers it: a suite started in the background (`pytest ... &` in a
    # script) inherits SIGINT ignored, and so would the search, which then never stops.
    proc = subprocess.Popen(CLI + ["--storage", url, "--study-name", "c", "--run-dir", str(tmp_path / "run"),
                                   "--n-trials", "1000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 180
    with contextlib.suppress(Exception):
        while len(_finished(url, "c")) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
    before = _finished(url, "c")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err
    assert before <= _finished(url, "c")
    failed = [t for t in _trials(url, "c") if t.state == optuna.trial.TrialState.FAIL]
    # The trial in flight, if any; a sampled repeat of a finished plan says so.
    assert all(t.user_attrs.get("fail_reason") == "interrupted"
               or t.user_attrs.get("fail_reason", "").startswith("same plan as trial ") for t in failed)
    assert (tmp_path / "run" / "report.html").is_file()
    rows = (tmp_path / "run" / "trials.csv").read_text().splitlines()
    assert len(rows) - 1 == len(_trials(url, "c"))


@pytest.mark.e2e  # a whole search (6 s): with the e2e tests
def test_trial_timeout_fails_the_trial_with_its_reason(tmp_path: Path, tiny_data) -> None:
    from tiny_models import tiny_cnn

    torch.manual_seed(0)
    config = SearchConfig(model="python", dataset="python", n_trials=2, storage=f"sqlite:///{tmp_path / 't.db'}",
                          study_name="t", run_dir=str(tmp_path), baselines=("teacher", "int8"), trial_timeout=1e-3)
    study = run_search(config, teacher=tiny_cnn().eval(), data=tiny_data, progress=False, log=lambda s: None)
    teacher, int8 = study.trials
    assert teacher.state == optuna.trial.TrialState.COMPLETE  # no fine-tune, nothing to time out
    assert int8.state == optuna.trial.TrialState.FAIL
    assert int8.user_attrs["fail_reason"].startswith("trial timed out during fine-tune")


def test_trial_that_died_before_its_first_heartbeat_is_failed_and_retried(tmp_path: Path) -> None:
    from autocomp.study.recovery import fail_dead_trials as fail_orphaned_trials
    from autocomp.study.storage import open_storage

    storage = open_storage(f"sqlite:///{tmp_path / 'o.db'}", heartbeat=1)
    study = optuna.create_study(study_name="o", storage=storage, directions=["maximize", "minimize", "minimize"])
    orphan = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})  # RUNNING, never a heartbeat
    assert fail_orphaned_trials(study, grace=60) == []  # too recent: its worker may be alive
    time.sleep(0.05)
    assert fail_orphaned_trials(study, grace=0.01) == [orphan.number]
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.WAITING]
    assert study.trials[1].params == study.trials[0].params  # retried with the same parameters
    assert study.trials[0].user_attrs["fail_reason"] == "its process died before the first heartbeat"
