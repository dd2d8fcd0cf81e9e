"""Optuna storages: open one, or check a URL before anything is written.

SQLite and PostgreSQL (RDB, with heartbeats) or a journal file. A SQLite or journal file's
folder must exist: Optuna would otherwise create it silently, relative to the current
directory.

Example::

    probe_storage("sqlite:///runs/a/study.db", make_folder=True)
    storage = open_storage("sqlite:///runs/a/study.db")
"""

from __future__ import annotations

import random
import time
import warnings
from pathlib import Path
from typing import Any

import optuna

from autocomp.errors import AutocompError

# Optuna's own stale check fails a silent trial with no reason; autocomp's (``heartbeat_ages``,
# ``autocomp.study.recovery.fail_dead_trials``) writes the reason first, then fails it. Optuna's
# grace is so long (3 years) that its check never fires before ours.
OPTUNA_GRACE = 10**8

def storage_file(url: str) -> Path | None:
    """The file behind a SQLite or journal storage URL (None for servers and in-memory SQLite).

    Example::

        storage_file("sqlite:///runs/a/study.db")   # Path("runs/a/study.db")
    """
    if url.startswith("journal:") or url.endswith((".log", ".journal")):
        return Path(url.removeprefix("journal:"))
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///").split("?", 1)[0]
        return Path(path) if path and path != ":memory:" else None
    return None


def in_memory(url: str) -> bool:
    """A SQLite URL with no file (``sqlite://``, ``sqlite:///``, ``sqlite:///:memory:``)."""
    return url.startswith("sqlite:") and storage_file(url) is None and url.split("?", 1)[0] in (
        "sqlite:", "sqlite://", "sqlite:///", "sqlite:///:memory:", "sqlite://:memory:")


def open_storage(url: str, heartbeat: int = 10) -> optuna.storages.BaseStorage:
    """RDB storage (SQLite, PostgreSQL, MySQL) with heartbeats, or a journal file.

    Heartbeats let a later run find trials a killed process left RUNNING (silent for
    ``3 * heartbeat`` seconds), mark them failed with a reason and retry their parameters once
    (``autocomp.study.recovery``: Optuna's own check, which records no reason, is held off by
    ``OPTUNA_GRACE``). Creates no
    folder: ``probe_storage`` refuses a file whose folder is missing (the runner makes its own
    run directory for the default storage).
    """
    try:
        if url.startswith("journal:") or url.endswith((".log", ".journal")):
            from optuna.storages.journal import JournalFileBackend, JournalStorage

            return JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
        if url.startswith("sqlite:///"):
            # isolation_level None: the driver opens no transaction of its own; _begin_immediate does.
            engine = {"connect_args": {"timeout": 60, "isolation_level": None}}
        else:
            engine = {"pool_pre_ping": True}
        for attempt in range(5):
            try:
                with warnings.catch_warnings():  # heartbeats are marked experimental; they are what we need
                    warnings.simplefilter("ignore")
                    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
                    storage = optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=heartbeat,
                                                         grace_period=OPTUNA_GRACE,
                                                         heartbeat_stale_trial_callback=retry)
                if url.startswith("sqlite:///"):
                    _begin_immediate(storage.engine)
                return storage
            except Exception:
                # Workers starting together race to create Optuna's tables; the loser's error is
                # transient (the tables now exist). The URL itself was checked by probe_storage.
                if attempt == 4:
                    raise
                time.sleep(0.5 + random.random())
    except Exception as exc:  # bad URLs and unreachable servers raise many types
        raise AutocompError(f"cannot open storage {url}: {str(exc).splitlines()[0][:200]}") from None
    raise AssertionError("unreachable")


def _begin_immediate(engine: Any) -> None:
    """Every SQLite transaction takes the write lock when it begins.

    Optuna pops an enqueued trial by reading that it is WAITING and then marking it RUNNING.
    SQLite ignores ``SELECT ... FOR UPDATE``, so two workers could both read WAITING and run the
    same trial; the second's tell then fails ("Cannot tell a COMPLETE trial") and ends that worker.
    ``BEGIN IMMEDIATE`` makes the read and the write one step (SQLAlchemy's pysqlite recipe);
    other workers wait for the lock (the connection's 60 s timeout).
    """
    import sqlalchemy

    @sqlalchemy.event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened while Optuna created its tables began no transaction


def probe_storage(url: str, make_folder: bool = False) -> None:
    """Check a storage URL without creating anything: a one-line error if it cannot work.

    A SQLite or journal file's folder must exist (Optuna would silently create it, relative to
    the current directory) unless ``make_folder`` (the default storage inside the run directory).

    Example::

        probe_storage("sqlite:///nonexistent/dir/x.db")   # AutocompError naming nonexistent/dir
    """
    if in_memory(url):
        raise AutocompError(f"storage {url}: an in-memory database keeps nothing once the run ends (and other "
                            "processes cannot join it); give a file, e.g. sqlite:///runs/study.db")
    path = storage_file(url)
    if path is not None:
        folder = path.parent
        if folder.exists() and not folder.is_dir():
            raise AutocompError(f"storage {url}: {folder} is not a folder")
        if not folder.exists() and not make_folder:
            raise AutocompError(f"storage {url}: folder {folder} does not exist (create it, or fix the path)")
        if path.exists() and not path.is_file():
            raise AutocompError(f"storage {url}: {path} is not a file")
        return
    if url.startswith("journal:") or url.startswith("sqlite:"):
        return
    try:
        import sqlalchemy

        engine = sqlalchemy.create_engine(url, pool_pre_ping=True)
        with engine.connect():
            pass
        engine.dispose()
    except Exception as exc:  # bad URLs, missing drivers and unreachable servers raise many types
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise AutocompError(f"cannot reach storage {url}: {detail}") from None


# -- Optuna's private API: every use lives here, each guarded by tests/study/test_storage.py,
# so an Optuna release that moves one fails that test, not a user's overnight run.
def study_storage(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage behind a study (``Study._storage``: a Study has no public getter)."""
    return study._storage


def study_system_attrs(study: optuna.Study) -> dict[str, Any]:
    """Every system attr of the study (a Study exposes only its user attrs publicly)."""
    return study._storage.get_study_system_attrs(study._study_id)


def set_study_system_attr(study: optuna.Study, key: str, value: Any) -> None:
    """Write a study system attr: kept out of the user-attrs cell of ``optuna studies`` and the dashboard."""
    study._storage.set_study_system_attr(study._study_id, key, value)


def trial_id(trial: optuna.trial.FrozenTrial | optuna.Trial) -> int:
    """The storage's id of a trial (``number`` is per study; the storage API takes this id)."""
    return trial._trial_id


def set_trial_system_attr(trial: optuna.Trial, key: str, value: Any) -> None:
    """Write a trial system attr from inside the objective (a Trial has no public setter)."""
    trial.storage.set_trial_system_attr(trial._trial_id, key, value)


def enqueued_params(trial: optuna.Trial) -> dict[str, Any]:
    """The params a trial was enqueued with (``enqueue_trial``); {} for a sampled trial."""
    return dict(getattr(trial, "_fixed_params", None) or {})


def heartbeat_trial_ids(study: optuna.Study) -> set[int] | None:
    """Storage ids of the trials that have sent a heartbeat; None where the storage keeps no
    heartbeats (not RDB) or this Optuna moved the tables."""
    ages = heartbeat_ages(study)
    return None if ages is None else set(ages)


def heartbeat_ages(study: optuna.Study) -> dict[int, float] | None:
    """Seconds since each trial's last heartbeat, by storage trial id, read on the database's
    own clock (as Optuna's stale check does: workers' clocks may differ); None where the
    storage keeps no heartbeats (not RDB) or this Optuna moved the tables."""
    storage = getattr(study._storage, "_backend", study._storage)  # Optuna wraps RDB storage in a cache
    if not isinstance(storage, optuna.storages.RDBStorage):
        return None
    try:  # Optuna has no public query for heartbeats
        import sqlalchemy
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        with _create_scoped_session(storage.scoped_session) as session:
            now = session.execute(sqlalchemy.func.now()).scalar().replace(tzinfo=None)
            rows = session.query(models.TrialHeartbeatModel.trial_id, models.TrialHeartbeatModel.heartbeat).all()
            return {tid: (now - beat.replace(tzinfo=None)).total_seconds() for tid, beat in rows}
    except Exception:
        return None


def fail_waiting_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial, attrs: dict[str, Any]) -> bool:
    """Take a trial out of the queue: claim it as Optuna's own pop does (no other worker runs it),
    write ``attrs`` (its reason) and fail it; False when another worker popped it first."""
    if not study._storage.set_trial_state_values(trial_id(trial), optuna.trial.TrialState.RUNNING):
        return False
    return fail_running_trial(study, trial, attrs)


def fail_running_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial, attrs: dict[str, Any]) -> bool:
    """Fail another process's RUNNING trial, first writing ``attrs`` (its reason) on it; False when it
    finished meanwhile."""
    storage = study._storage
    try:
        for key, value in attrs.items():
            storage.set_trial_user_attr(trial_id(trial), key, value)
        return storage.set_trial_state_values(trial_id(trial), optuna.trial.TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:  # finished meanwhile by a live worker
        return False
