"""What a run repairs: dead workers' trials failed with their reason, baselines re-run on resume,
plans never run twice, a resume with other settings refused before any teacher is trained, and
stored artifact paths that resolve from anywhere (issue 20)."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pytest
import torch

from autocomp.config import SearchConfig
from autocomp.errors import AutocompError
from autocomp.pipeline.workbench import Workbench
from autocomp.study import records, runner
from autocomp.study.create import open_study, sampler_seed
from autocomp.study.recovery import fail_dead_trials, requeue_baselines, requeue_deferred, same_plan_as
from autocomp.study.space import load_space
from autocomp.study.storage import fail_waiting_trial, open_storage, study_storage

State = optuna.trial.TrialState
X = optuna.distributions.FloatDistribution(0, 1)
optuna.logging.set_verbosity(optuna.logging.ERROR)


def _study(tmp_path: Path, heartbeat: int = 1) -> optuna.Study:
    storage = open_storage(f"sqlite:///{tmp_path / 'r.db'}", heartbeat=heartbeat)
    return optuna.create_study(study_name="r", storage=storage, directions=["maximize", "minimize", "minimize"])


def test_a_silent_trial_is_failed_with_its_reason_and_retried_and_optunas_own_check_waits(tmp_path: Path) -> None:
    study = _study(tmp_path)
    trial = study.ask({"x": X})
    study_storage(study).record_heartbeat(trial._trial_id)  # beat once, then "killed"
    time.sleep(1.2)  # SQLite's clock counts whole seconds
    optuna.storages.fail_stale_trials(study)  # Optuna's check, run before every trial: held off
    assert study.trials[0].state == State.RUNNING
    assert fail_dead_trials(study, grace=60) == []  # not silent long enough
    assert fail_dead_trials(study, grace=0.5) == [trial.number]
    failed, retry = study.trials
    assert failed.state == State.FAIL and retry.state == State.WAITING and retry.params == failed.params
    assert failed.user_attrs["fail_reason"].startswith("its process stopped (no heartbeat for ")
    assert records.is_interruption(failed.user_attrs["fail_reason"])
    assert fail_dead_trials(study, grace=0.5) == []  # failed once, by whoever got there first


def _finished(study: optuna.Study, x: float, state: State = State.COMPLETE, **attrs: object) -> None:
    values = [1.0, 1.0, 1.0] if state == State.COMPLETE else None
    study.add_trial(optuna.trial.create_trial(state=state, params={"x": x}, distributions={"x": X}, values=values,
                                              user_attrs={"plan": {}, **attrs}))


def test_same_plan_is_found_among_finished_and_running_trials(tmp_path: Path) -> None:
    study = _study(tmp_path)
    _finished(study, 0.25)
    _finished(study, 0.5, State.FAIL, fail_reason="interrupted")  # a failed plan may run again
    sampling = study.ask({"x": X})  # RUNNING, its plan not written yet: it checks for itself later
    sampling.suggest_float("x", 0, 1)
    twin = study.ask({"x": optuna.distributions.FloatDistribution(0.25, 0.25)})
    records.write_plan(twin, _plan())
    again = study.ask({"x": optuna.distributions.FloatDistribution(0.5, 0.5)})
    records.write_plan(again, _plan())
    assert same_plan_as(study, twin) == 0
    assert same_plan_as(study, again) is None
    records.write_plan(sampling, _plan())  # both running one plan: the later to check sees the other
    if sampling.params == again.params:
        assert same_plan_as(study, sampling) == again.number


def test_a_baseline_matches_its_own_kind_only(tmp_path: Path) -> None:
    study = _study(tmp_path)
    _finished(study, 0.25, baseline="int8")
    teacher = study.ask({"x": optuna.distributions.FloatDistribution(0.25, 0.25)})
    teacher.set_user_attr("baseline", "teacher")
    records.write_plan(teacher, _plan())
    assert same_plan_as(study, teacher) is None
    int8 = study.ask({"x": optuna.distributions.FloatDistribution(0.75, 0.75)})
    int8.set_user_attr("baseline", "int8")
    assert same_plan_as(study, int8) == 0


def _plan():  # noqa: ANN202
    from autocomp.plan import Plan

    return Plan()


def test_baselines_that_never_finished_are_enqueued_again_once(tmp_path: Path) -> None:
    study = _study(tmp_path)
    _finished(study, 0.1, baseline="teacher")
    _finished(study, 0.2, State.FAIL, baseline="int8", fail_reason="interrupted")
    _finished(study, 0.3, State.FAIL, baseline="svd50", fail_reason="export failed: RuntimeError: x")
    for _ in range(2):
        _finished(study, 0.4, State.FAIL, baseline="prune50", fail_reason="compress failed: ValueError: y")
    points = {name: ({"x": 0.5}, None) for name in ("teacher", "int8", "svd50", "prune50", "channels50")}
    names = ("teacher", "int8", "svd50", "prune50", "channels50")
    assert requeue_baselines(study, names, points) == ["int8", "svd50", "channels50"]
    assert requeue_baselines(study, names, points) == []  # queued now: not again
    waiting = [t.user_attrs["baseline"] for t in study.trials if t.state == State.WAITING]
    assert waiting == ["int8", "svd50", "channels50"]


def test_seeds_a_killed_promotion_deferred_are_queued_again_on_resume_once(tmp_path: Path) -> None:
    study = _study(tmp_path)
    seeds = [({"x": 0.1}, records.seed_marks("size", 0, 1000.0, {"kl": 0.1})),
             ({"x": 0.2}, records.seed_marks("latency", 1, 0.5, {"kl": 0.2}))]
    for params, marks in seeds + [({"x": 0.3}, records.baseline_marks("int8", None))]:
        study.enqueue_trial(params, user_attrs=marks)
    for t in study.get_trials(states=(State.WAITING,)):  # deferred, then the process was killed
        assert fail_waiting_trial(study, t, records.failure_attrs(records.DEFERRED))
    study.enqueue_trial({"x": 0.1}, user_attrs=seeds[0][1])  # the first was queued again before the kill
    assert requeue_deferred(study) == 1
    waiting = [records.queued_plan(t) for t in study.trials if t.state == State.WAITING]
    assert waiting == [seeds[0], seeds[1]]  # with its marks and no failure reason; the baseline is left to
    assert requeue_deferred(study) == 0     # requeue_baselines; a second resume queues nothing more


def test_joining_workers_never_share_the_creators_seed() -> None:
    shared = SearchConfig(storage="sqlite:///x.db", seed=3)
    assert sampler_seed(shared, 0, creator=True) == sampler_seed(shared, 0, creator=True) == 3 * 100_003
    joiners = {sampler_seed(shared, 4, creator=False) for _ in range(50)}
    assert len(joiners) == 50 and 3 * 100_003 not in joiners and 3 * 100_003 + 4 not in joiners
    alone = SearchConfig(seed=3)  # the run directory's own storage: a resume is reproducible
    assert sampler_seed(alone, 7, creator=False) == sampler_seed(alone, 7, creator=False) == 3 * 100_003 + 7


def _config(tmp_path: Path, **kw) -> SearchConfig:  # noqa: ANN003
    return SearchConfig(**{"model": "python", "dataset": "python", "storage": f"sqlite:///{tmp_path / 's.db'}",
                           "study_name": "s", "run_dir": str(tmp_path / "run"), **kw})


@pytest.mark.parametrize(("change", "named"), [({"model": "lenet5"}, "another model: 'python', this run 'lenet5'"),
                                               ({"seed": 1}, "another seed: 0, this run 1")])
def test_a_resume_with_other_settings_is_refused_before_any_teacher_is_trained(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: dict, named: str) -> None:
    from tiny_models import tiny_cnn

    config = _config(tmp_path)
    open_study(config, load_space("default"), open_storage(config.storage_url), tiny_cnn().eval(), 5)
    trained = []
    monkeypatch.setattr(runner, "prepare", lambda *a, **k: trained.append(1) or pytest.fail("teacher trained"))
    with pytest.raises(AutocompError, match=f"was made with other settings .*{named}") as err:
        runner.optimize(_config(tmp_path, **change), progress=False, log=lambda s: None)
    assert not trained and "\n" not in str(err.value)


@pytest.mark.e2e  # a whole search, twice: with the e2e tests (--all)
def test_an_interrupted_baseline_is_run_again_on_resume_exactly_once(tmp_path: Path, tiny_data,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from tiny_models import tiny_cnn

    real_run, stop = Workbench.run, {"int8"}

    def run(self, plan, path, deadline=None, on_step=None):  # noqa: ANN001, ANN202
        if plan.layers and all(s.bits == 8 for s in plan.layers.values()) and stop:  # Ctrl-C on the int8 baseline
            stop.clear()
            raise KeyboardInterrupt
        return real_run(self, plan, path, deadline, on_step)

    monkeypatch.setattr(Workbench, "run", run)
    torch.manual_seed(0)
    teacher = tiny_cnn().eval()
    config = _config(tmp_path, n_trials=2, baselines=("teacher", "int8"), keep_artifacts=True)
    first = runner.optimize(config, teacher=teacher, data=tiny_data, progress=False, log=lambda s: None)
    assert first.interrupted
    assert [(t.user_attrs["baseline"], t.state) for t in first.study.trials] == [("teacher", State.COMPLETE),
                                                                                ("int8", State.FAIL)]
    assert first.study.trials[1].user_attrs["fail_reason"] == "interrupted"
    for _ in range(2):
        again = runner.optimize(_config(tmp_path, n_trials=1, baselines=("teacher", "int8"), keep_artifacts=True),
                                teacher=teacher, data=tiny_data, progress=False, log=lambda s: None)
    done = [t.user_attrs["baseline"] for t in again.study.trials if t.state == State.COMPLETE
            and t.user_attrs.get("baseline")]
    assert sorted(done) == ["int8", "teacher"]  # re-run once, not on every resume
    kept = records.read_trial(again.study.trials[2]).artifact.path
    assert Path(kept).is_absolute() and Path(kept).is_file()


def test_an_old_relative_artifact_path_is_found_beside_the_storage(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "run" / "artifacts").mkdir(parents=True)
    (tmp_path / "run" / "artifacts" / "trial_00003.acz").write_bytes(b"x")
    old = records.Artifact("runs/r/artifacts/trial_00003.acz", "0" * 64)  # relative to where that run started
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'run' / 'study.db'}"
    assert records.artifact_path(old, url) == (tmp_path / "run" / "artifacts" / "trial_00003.acz").resolve()
    assert records.artifact_path(old) is None
    absolute = records.Artifact(str(tmp_path / "run" / "artifacts" / "trial_00003.acz"))
    assert records.artifact_path(absolute) == Path(absolute.path)


def test_the_audit_counts_what_a_multi_worker_run_must_not_leave(tmp_path: Path) -> None:
    from autocomp.study.audit import audit_study

    (tmp_path / "a.acz").write_bytes(b"kept")
    study = _study(tmp_path)
    _finished(study, 0.25, baseline="teacher", artifact=str(tmp_path / "a.acz"), artifact_sha256="0" * 64)
    _finished(study, 0.25)  # the same plan complete twice
    _finished(study, 0.5, State.FAIL)  # no reason
    study.ask({"x": X})  # left RUNNING
    _finished(study, 0.75, State.PRUNED)
    audit = audit_study(study, expected_baselines=("teacher", "int8"))
    assert (audit.duplicates, audit.running, audit.fail_without_reason, audit.sha256_mismatch) == (1, 1, (2,), (0,))
    assert audit.baselines == {"teacher": 1} and not audit.clean
    assert audit.line().startswith("5 trials (2 complete, 1 stopped early, 1 failed): "
                                   "1 duplicate plans among COMPLETE, 1 RUNNING, 1 FAIL without a reason")


def test_a_promotion_is_not_the_plan_of_its_original_but_a_second_promotion_is(tmp_path) -> None:
    from autocomp.study.recovery import same_plan_as

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'p.db'}",
                                directions=["maximize", "minimize", "minimize"])
    original = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    study.tell(original, [1.0, 1.0, 1.0])
    for _ in range(2):
        study.enqueue_trial(original.params, user_attrs=records.promotion_marks(original.number))
    first = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    assert first.params == original.params and same_plan_as(study, first) is None
    study.tell(first, [1.0, 1.0, 1.0])
    second = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    assert same_plan_as(study, second) == first.number
