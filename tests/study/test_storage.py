"""Storages: URLs refused before anything is written, and every use of Optuna's private API
(``autocomp.study.storage`` is the only module with one) checked against the installed Optuna,
so a release that moves one fails here rather than in a user's overnight run."""

from __future__ import annotations

import multiprocessing
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import pytest

from autocomp.errors import AutocompError
from autocomp.study import storage as st

optuna.logging.set_verbosity(optuna.logging.ERROR)


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "sqlite:///:memory:"])
def test_in_memory_sqlite_is_refused_in_one_line(url: str) -> None:
    with pytest.raises(AutocompError, match="in-memory database keeps nothing") as err:
        st.probe_storage(url)
    assert "\n" not in str(err.value)


def test_a_file_url_is_not_in_memory(tmp_path: Path) -> None:
    assert not st.in_memory(f"sqlite:///{tmp_path}/a.db")
    st.probe_storage(f"sqlite:///{tmp_path}/a.db")  # the folder exists: accepted, nothing created
    assert not (tmp_path / "a.db").exists()


@pytest.fixture(params=["sqlite", "journal"])
def study(request: pytest.FixtureRequest, tmp_path: Path) -> optuna.Study:
    url = f"sqlite:///{tmp_path}/s.db" if request.param == "sqlite" else f"journal:{tmp_path}/s.journal"
    return optuna.create_study(study_name="s", storage=st.open_storage(url, heartbeat=60))


def test_study_system_attrs_round_trip(study: optuna.Study) -> None:
    st.set_study_system_attr(study, "autocomp:x", {"a": [1, 2]})
    assert st.study_system_attrs(study)["autocomp:x"] == {"a": [1, 2]}
    assert "autocomp:x" not in study.user_attrs
    assert st.study_storage(study).get_study_system_attrs(study._study_id)["autocomp:x"] == {"a": [1, 2]}


def test_trial_ids_system_attrs_and_enqueued_params(study: optuna.Study) -> None:
    study.enqueue_trial({"x": 3.0})
    seen = []

    def objective(trial: optuna.Trial) -> float:
        seen.append((st.trial_id(trial), st.enqueued_params(trial)))
        st.set_trial_system_attr(trial, "constraints", [0.5])
        return trial.suggest_float("x", 0.0, 4.0)

    study.optimize(objective, n_trials=2)
    (first_id, first_params), (second_id, second_params) = seen
    assert first_params == {"x": 3.0} and second_params == {}
    for frozen, tid in zip(study.trials, (first_id, second_id), strict=True):
        assert st.trial_id(frozen) == tid
        assert st.study_storage(study).get_trial(tid).number == frozen.number
        assert frozen.system_attrs["constraints"] == [0.5]


def test_fail_running_trial_records_the_reason_once(study: optuna.Study) -> None:
    running = study.ask()
    frozen = study.get_trials(deepcopy=False)[-1]
    assert st.fail_running_trial(study, frozen, {"fail_reason": "its process died"})
    failed = study.get_trials(deepcopy=False)[-1]
    assert failed.state == optuna.trial.TrialState.FAIL and failed.user_attrs["fail_reason"] == "its process died"
    assert not st.fail_running_trial(study, failed, {"fail_reason": "again"})  # finished meanwhile: left as it is
    assert running.number == failed.number


def test_heartbeat_rows_are_read_from_an_rdb_storage(tmp_path: Path) -> None:
    study = optuna.create_study(storage=st.open_storage(f"sqlite:///{tmp_path}/h.db", heartbeat=60))
    silent_id = st.study_storage(study).create_new_trial(study._study_id)  # RUNNING, no heartbeat ever sent
    seen = []

    def objective(trial: optuna.Trial) -> float:  # optimize() beats for the trial it runs, from a thread
        deadline = time.monotonic() + 10
        while st.trial_id(trial) not in (st.heartbeat_trial_ids(study) or ()) and time.monotonic() < deadline:
            time.sleep(0.05)
        seen.append((st.trial_id(trial), st.heartbeat_trial_ids(study), st.heartbeat_ages(study)))
        return 0.0

    study.optimize(objective, n_trials=1)
    (beating, ids, ages), = seen
    assert ids is not None, "Optuna moved its heartbeat table: autocomp.study.storage.heartbeat_trial_ids"
    assert beating in ids and silent_id not in ids
    assert ages is not None and set(ages) == ids  # read on the database's clock: just beaten
    assert -2.0 <= ages[beating] <= 5.0


def test_optunas_own_stale_check_never_fires_first(tmp_path: Path) -> None:
    """Its grace is what autocomp sets (``OPTUNA_GRACE``): Optuna's check would fail a trial with no reason."""
    storage = st.open_storage(f"sqlite:///{tmp_path}/g.db", heartbeat=1)
    assert storage.grace_period == st.OPTUNA_GRACE and storage.get_heartbeat_interval() == 1


def test_a_journal_keeps_no_heartbeats(tmp_path: Path) -> None:
    study = optuna.create_study(storage=st.open_storage(f"journal:{tmp_path}/j.journal"))
    assert st.heartbeat_trial_ids(study) is None


def _ask_ten(url: str, out: Any) -> None:
    study = optuna.load_study(study_name="r", storage=st.open_storage(url))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # heartbeats are meant for optimize(); ask() is what races here
        out.put([study.ask().number for _ in range(10)])


def test_workers_never_pop_the_same_enqueued_trial(tmp_path: Path) -> None:
    # SQLite ignores SELECT ... FOR UPDATE: without BEGIN IMMEDIATE two workers read the same
    # WAITING trial and both run it (4 processes x 10 pops found 1-5 duplicates per run).
    url = f"sqlite:///{tmp_path}/r.db"
    study = optuna.create_study(study_name="r", storage=st.open_storage(url))
    for i in range(40):
        study.enqueue_trial({"x": float(i)})
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    workers = [ctx.Process(target=_ask_ten, args=(url, out)) for _ in range(4)]
    for w in workers:
        w.start()
    popped = sum((out.get(timeout=120) for _ in workers), [])
    for w in workers:
        w.join()
    assert sorted(popped) == list(range(40))
