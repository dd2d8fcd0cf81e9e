"""``autocomp.study.records``: what is written is read back typed, older layouts read the same way,
and no other module of the package spells an attr key."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import optuna
import pytest

from autocomp.plan import Plan
from autocomp.study import records

PACKAGE = Path(records.__file__).resolve().parents[1]
DIRECTIONS = ["maximize", "minimize", "minimize"]


def _sqlite_study(tmp_path: Path) -> optuna.Study:
    return optuna.create_study(directions=DIRECTIONS, storage=f"sqlite:///{tmp_path / 's.db'}", study_name="s")


def test_study_records_round_trip_through_sqlite(tmp_path: Path) -> None:
    study = _sqlite_study(tmp_path)
    identity = records.Identity(("accuracy", "size_bytes", "latency_ms"), ("accuracy_drop",), "default",
                                "version: 1", "w1", None, {"model": "lenet5", "seed": 3}, {"model": "lenet5"})
    records.write_study_identity(study, identity, "default")
    split = {"method": "seeded permutation", "seed": 3}
    records.write_workbench(study, 97.5, 12_345, {"mean": [0.5], "std": [0.25], "input_shape": [1, 8, 8]},
                            {"eval_transform": "x / 16", "split": split}, {"runtime": "onnxruntime", "label": "ORT"},
                            "ORT on CPU", {"warmup_runs": 5, "input": {"shape": [1, 1, 8, 8]}})
    records.write_layer_costs(study, {"conv1": 0.5})
    records.write_teacher_reference(study, {"median_ms": 0.04, "q1_ms": 0.03, "runs": 99})

    rec = records.read_study(optuna.load_study(study_name="s", storage=study._storage))
    assert rec.config == {"model": "lenet5", "seed": 3} and rec.identity == {"model": "lenet5"}
    assert rec.space_label == "default" and rec.space_text == "version: 1"
    assert rec.objectives == ("accuracy", "size_bytes", "latency_ms") and rec.constraint_names == ("accuracy_drop",)
    assert rec.preprocessing["eval_transform"] == "x / 16" and rec.split == split
    assert rec.data_norm == {"mean": [0.5], "std": [0.25], "input_shape": [1, 8, 8]}
    assert rec.runtime == {"runtime": "onnxruntime", "label": "ORT"} and rec.runtime_line == "ORT on CPU"
    t = rec.teacher
    assert (t.accuracy, t.size_bytes, t.reference_ms, t.digest) == (97.5, 12_345, 0.04, "w1")
    assert t.reference["runs"] == 99 and t.source_recorded and t.source_digest is None
    assert rec.layer_costs == {"conv1": 0.5} and rec.calibrated
    assert rec.timing == {"warmup_runs": 5, "input": {"shape": [1, 1, 8, 8]}}
    # Out of the user-attrs cell Optuna's tools print: only the short ones are user attrs.
    assert set(study.user_attrs) == {"space", "teacher_accuracy", "teacher_size_bytes", "data_norm",
                                     "preprocessing", "runtime", "teacher_reference_ms"}


def test_trial_records_round_trip_through_sqlite(tmp_path: Path) -> None:
    study = _sqlite_study(tmp_path)
    study.enqueue_trial({}, user_attrs=records.baseline_marks("int8", "conv1.bits is 8, outside the domain"))
    plan = Plan.from_dict({"version": 1, "layers": {"conv1": {"bits": 8}}, "quant_mode": "qat", "seed": 0,
                           "distill": {"steps": 10}})
    trial = study.ask()
    assert records.trial_baseline(trial) == "int8"
    records.write_plan(trial, plan)
    metrics = {"accuracy": 97.0, "size_bytes": 4000, "latency_ms": 0.02, "teacher_latency_ms": 0.04}
    records.write_outcome(trial, metrics, records.Latency(0.5, 0.04, 0.3),
                          records.Artifact("runs/a/trial_00000.acz", "ab" * 32), {"total": 1.5}, 0.25,
                          {"conv1": {"method": "cp:0.25", "seconds": 0.1, "error": None,
                                     "refused": "did not converge"}})
    records.write_constraints(trial, {"accuracy_drop": -0.5, "size_bytes": 2.0})
    study.tell(trial, [97.0, 4000.0, 0.02])
    failed = study.ask()
    records.write_failure(failed, "export failed: X")
    study.tell(failed, state=optuna.trial.TrialState.FAIL)

    done, lost = (records.read_trial(t) for t in optuna.load_study(study_name="s", storage=study._storage).trials)
    assert done.plan == plan and done.metrics == metrics and done.baseline == "int8"
    assert done.outside_space == "conv1.bits is 8, outside the domain"
    assert done.latency == records.Latency(0.5, 0.04, 0.3)
    assert done.artifact == records.Artifact("runs/a/trial_00000.acz", "ab" * 32)
    assert done.seconds == {"total": 1.5} and done.final_loss == 0.25 and done.failure is None
    assert done.constraints == (-0.5, 2.0)
    assert done.decomposed["conv1"]["refused"] == "did not converge" and lost.decomposed == {}
    assert lost.failure == "export failed: X" and lost.plan is None and lost.baseline is None
    assert lost.state == optuna.trial.TrialState.FAIL and lost.metrics == {}
    with pytest.raises(AttributeError):  # frozen
        done.failure = "x"  # type: ignore[misc]


def test_a_study_made_by_an_older_version_reads_the_same_way(tmp_path: Path) -> None:
    """Before system attrs everything was a user attr; before issue 12 no latency ratio was stored
    (the objective was the absolute median, timed beside the teacher); Optuna 4 kept the
    constraints as one list."""
    study = _sqlite_study(tmp_path)
    for key, value in {"config": {"model": "lenet5"}, "space_text": "old", "teacher_digest": "w0",
                       "teacher_accuracy": 98.0, "identity": {"model": "lenet5"}}.items():
        study.set_user_attr(key, value)
    study.add_trial(optuna.trial.create_trial(
        values=[96.0, 5000.0, 0.03], user_attrs={"plan": {"layers": {}}, "metrics": {"teacher_latency_ms": 0.06}},
        system_attrs={"constraints": [0.5]}))
    study.add_trial(optuna.trial.create_trial(values=[95.0, 4000.0, 0.03], user_attrs={"metrics": {}}))
    rec = records.read_study(study)
    assert rec.config == {"model": "lenet5"} and rec.space_text == "old" and rec.identity == {"model": "lenet5"}
    assert rec.teacher.digest == "w0" and rec.teacher.accuracy == 98.0
    assert not rec.teacher.source_recorded and rec.runtime is None and rec.teacher.reference is None
    assert not rec.calibrated and rec.timing is None
    assert records.study_attr(study, "config") == {"model": "lenet5"}
    old, bare = (records.read_trial(t) for t in study.trials)
    assert math.isclose(old.latency.ratio, 0.5) and old.constraints == (0.5,)
    assert bare.latency.ratio is None and bare.constraints == ()


def test_system_attrs_win_over_user_attrs_of_the_same_name(tmp_path: Path) -> None:
    study = _sqlite_study(tmp_path)
    study.set_user_attr("runtime", "ORT on CPU")
    records.set_system_attr(study, "runtime", {"runtime": "openvino"})
    assert records.read_study(study).runtime == {"runtime": "openvino"}
    assert records.study_attr(study, "runtime") == {"runtime": "openvino"}


def test_no_other_module_reads_or_writes_attrs_by_key() -> None:
    """Keys are spelled in ``records`` only: nothing else touches ``user_attrs``/``system_attrs``
    or calls ``set_user_attr`` (``storage`` keeps Optuna's private storage calls)."""
    names = {"user_attrs", "system_attrs", "set_user_attr"}
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "records.py" and path.parent.name == "study":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in names:
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} .{node.attr}")
    assert not found, found
