"""The study as Optuna's own tools see it: storage, metric names, constraints, baselines' params,
study attrs, and the refusal to mix two teachers in one study."""

from __future__ import annotations

import io
import json
import sys
from contextlib import redirect_stdout
from dataclasses import replace
from pathlib import Path
from wsgiref.util import setup_testing_defaults

import optuna
import pytest
import torch

from autocomp.api import run_search
from autocomp.config import SearchConfig
from autocomp.errors import AutocompError
from autocomp.measure import Metrics
from autocomp.models.layers import output_layers
from autocomp.pipeline.workbench import TrialResult, Workbench
from autocomp.plan import BASELINES, Plan
from autocomp.study.baselines import baseline_points
from autocomp.study.create import load_existing_study, open_study, pareto_trials
from autocomp.study.pareto import OBJECTIVES
from autocomp.study.records import SYSTEM_ATTRS, study_attr
from autocomp.study.space import load_space, parse_space
from autocomp.study.storage import open_storage, probe_storage, storage_file


# -- storage ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("url, path", [
    ("sqlite:///runs/a/study.db", "runs/a/study.db"),
    ("sqlite:////abs/x.db", "/abs/x.db"),
    ("sqlite:///x.db?timeout=3", "x.db"),
    ("journal:/shared/s.log", "/shared/s.log"),
    ("runs/s.journal", "runs/s.journal"),
    ("sqlite:///:memory:", None),
    ("postgresql://u:p@host/db", None),
])
def test_storage_file_of_a_url(url: str, path: str | None) -> None:
    assert storage_file(url) == (Path(path) if path else None)


@pytest.mark.parametrize("url", ["sqlite:///nonexistent/dir/x.db", "journal:nonexistent/dir/x.log",
                                 "nonexistent/dir/x.journal"])
def test_a_storage_file_needs_its_folder_and_none_is_created(url: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("autocomp.study.storage.time.sleep", lambda s: None)  # open_storage's retries
    with pytest.raises(AutocompError, match="folder nonexistent/dir does not exist"):
        probe_storage(url)
    probe_storage(url, make_folder=True)  # the default storage in the run directory, which the runner makes
    if url.startswith("sqlite"):
        with pytest.raises(AutocompError, match="cannot open storage"):
            open_storage(url)  # Optuna's SQLAlchemy engine cannot make folders: nothing half-created
    assert list(tmp_path.iterdir()) == []


def test_report_and_export_never_create_a_storage(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'none.db'}"
    with pytest.raises(AutocompError, match="no storage at"):
        load_existing_study(url, "s")
    assert list(tmp_path.iterdir()) == []


# -- opening a study ----------------------------------------------------------------------------------
def _config(tmp_path: Path, **kw) -> SearchConfig:
    return SearchConfig(**{"model": "python", "dataset": "python", "storage": f"sqlite:///{tmp_path / 's.db'}",
                           "study_name": "s", **kw})


def _journal(tmp_path: Path) -> optuna.storages.BaseStorage:
    return open_storage(f"journal:{tmp_path / 's.log'}")


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_study_attrs_stay_narrow_and_read_back(kind: str, tmp_path: Path) -> None:
    from tiny_models import tiny_cnn

    config, space = _config(tmp_path), load_space("default")
    storage = open_storage(config.storage_url) if kind == "sqlite" else _journal(tmp_path)
    teacher = tiny_cnn().eval()
    study, fresh = open_study(config, space, storage, teacher, 5)
    assert fresh and study.metric_names == list(OBJECTIVES)
    assert study.user_attrs == {"space": "default"}  # the table cell: the big texts are system attrs
    assert study_attr(study, "config") == config.to_dict()
    assert study_attr(study, "space_text") == space.text
    assert study_attr(study, "identity") == json.loads(json.dumps(config.identity()))
    assert study_attr(study, "constraint_names") == ["accuracy_drop"]
    assert all(study_attr(study, key, "absent") != "absent" for key in SYSTEM_ATTRS)
    again, fresh = open_study(config, space, storage, teacher, 5)
    assert not fresh and len(again.trials) == len(config.baselines)  # baselines enqueued once


def test_study_attr_reads_studies_made_before_the_system_attrs(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'old.db'}")
    study.set_user_attr("config", {"model": "lenet5"})
    assert study_attr(study, "config") == {"model": "lenet5"}
    assert study_attr(study, "space_text", "none") == "none"


def test_optuna_studies_prints_a_readable_row(tmp_path: Path, monkeypatch) -> None:
    from tiny_models import tiny_cnn

    config = _config(tmp_path, space="default")
    open_study(config, load_space("default"), open_storage(config.storage_url), tiny_cnn().eval(), 5)
    import optuna.cli

    monkeypatch.setattr(sys, "argv", ["optuna", "studies", "--storage", config.storage_url])
    out = io.StringIO()
    with redirect_stdout(out):
        assert optuna.cli.main() == 0
    text = out.getvalue()
    assert "space_text" not in text and "version: 1" not in text and "'space': 'default'" in text
    assert max(map(len, text.splitlines())) < 160  # was thousands of characters: the space and config


def test_a_study_refuses_a_teacher_with_other_weights(tmp_path: Path) -> None:
    from tiny_models import tiny_cnn

    config, space = _config(tmp_path), load_space("default")
    storage = open_storage(config.storage_url)
    torch.manual_seed(0)
    teacher = tiny_cnn().eval()
    open_study(config, space, storage, teacher, 5)
    with torch.no_grad():
        teacher[0].weight[0, 0, 0, 0] += 1.0
    with pytest.raises(AutocompError, match="was made with another teacher \\(weights [0-9a-f]{16}, now"):
        open_study(config, space, storage, teacher, 5)


BUILDER = """\
from torch import nn


def build(num_classes=10):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.{act}(), nn.Linear(16, num_classes))
"""


def test_a_study_refuses_the_same_weights_under_an_edited_builder(tmp_path: Path) -> None:
    """Same shapes, same weights (one checkpoint): only the builder's source differs."""
    path = tmp_path / "net.py"
    path.write_text(BUILDER.format(act="ReLU"))
    config, space = _config(tmp_path, model=f"{path}:build"), load_space("default")
    storage = open_storage(config.storage_url)
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(),
                                  torch.nn.Linear(16, 10))
    study, _ = open_study(config, space, storage, teacher, 5)
    assert open_study(config, space, storage, teacher, 5)[0].study_name == study.study_name  # unchanged: resumes
    path.write_text(BUILDER.format(act="Tanh"))
    with pytest.raises(AutocompError, match=f"the source of {path}:build changed since"):
        open_study(config, space, storage, teacher, 5)


# -- baselines in the search space --------------------------------------------------------------------
def _points(model: torch.nn.Module, space_text: str | None = None) -> dict:
    space = parse_space(space_text) if space_text else load_space("default")
    outs = output_layers(model, torch.zeros(1, 1, 8, 8))
    return baseline_points(space, model, outs, SearchConfig()), space, outs


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_a_baseline_inside_the_space_gets_the_params_that_rebuild_its_plan(name: str) -> None:
    from tiny_models import tiny_cnn

    model = tiny_cnn().eval()
    points, space, outs = _points(model)
    params, outside = points[name]
    assert outside is None
    assert set(params) == set(space.dimensions(model, outs))  # every searched dimension, no other name
    rebuilt = space.sample(optuna.trial.FixedTrial(params), model, outs)
    template = Plan(distill=space.fixed_distill(), quant_mode=space.quant_mode)
    plan = Plan.baseline(name, list(rebuilt.layers), template, outs)
    assert rebuilt.active_layers == plan.active_layers
    # The teacher runs no fine-tune; that is the one setting its params do not hold.
    expected = replace(rebuilt.distill, steps=0) if name == "teacher" else rebuilt.distill
    assert expected == plan.distill


@pytest.mark.parametrize("space_text, model, name, why", [
    ("version: 1\nlayers:\n  - type: Conv2d\n    bits: [null, 8]\n  - type: Linear\n    bits: [null, 8]\n",
     "tiny_cnn", "int4", "bits is 4, outside the space's domain"),
    ("version: 1\nlayers:\n  - type: Conv2d\n    bits: [8, 4]\n  - type: Linear\n    bits: [8, 4]\n",
     "tiny_cnn", "teacher", "bits is None, outside the space's domain"),
    (None, "tiny_residual", "prune50", "dw.sparsity is 0.5, a setting the space never makes"),
    ("version: 1\nlayers:\n  - type: Conv2d\n    bits: [null, 8]\n  - type: Linear\n    bits: [null, 8]\n",
     "tiny_cnn", "svd50", "rank is 0.5, a setting the space never makes"),
])
def test_a_baseline_outside_the_space_gets_no_params_and_says_why(space_text, model, name, why) -> None:
    from tiny_models import TINY_MODELS

    points, _, _ = _points(TINY_MODELS[model]().eval(), space_text)
    params, outside = points[name]
    assert params == {} and why in outside


# -- what optuna-dashboard shows ----------------------------------------------------------------------
SPACE = """\
version: 1
layers:
  - type: Conv2d
    bits: [null, 8, 4]
    sparsity: {low: 0.0, high: 0.9, step: 0.1}
  - type: Linear
    bits: [null, 8, 4]
    sparsity: {low: 0.0, high: 0.9, step: 0.1}
global:
  temperature: {low: 1.0, high: 8.0}
  steps: 2
constraints:
  max_accuracy_drop: 1.0
"""
# Per trial: points of accuracy below the teacher, bytes, latency ratio. Trials 2 and 3 break the 1-point
# limit yet no other trial dominates them: an unconstrained front holds them, a feasible one not.
OUTCOMES = [(0.0, 1000, 1.0), (0.5, 500, 1.0), (3.0, 100, 0.5), (2.0, 200, 0.6), (0.2, 800, 1.1), (0.8, 600, 1.2)]


def _dashboard(storage: optuna.storages.BaseStorage, path: str) -> dict:
    """GET from optuna-dashboard's own WSGI app, as its browser page does."""
    import optuna_dashboard

    app, env, status = optuna_dashboard.wsgi(storage), {}, []
    setup_testing_defaults(env)
    env.update(PATH_INFO=path, REQUEST_METHOD="GET")
    body = b"".join(app(env, lambda s, headers, exc=None: status.append(s)))
    assert status[0].startswith("200"), body[:300]
    return json.loads(body)


def dashboard_front(detail: dict) -> set[int]:
    """optuna-dashboard 0.21's Pareto-front plot, as its page computes it: complete trials whose
    constraint list is all <= 0, then those no other such trial dominates."""
    directions = detail["directions"]
    feasible = [t for t in detail["trials"] if t["state"] == "Complete" and len(t.get("values") or []) ==
                len(directions) and all(c <= 0 for c in t["constraints"])]
    pts = [[v if d == "minimize" else -v for v, d in zip(t["values"], directions, strict=True)] for t in feasible]
    dominated = [any(o != p and all(a <= b for a, b in zip(o, p, strict=True)) for o in pts) for p in pts]
    return {t["number"] for t, dom in zip(feasible, dominated, strict=True) if not dom}


def _unconstrained_front(trials: list[optuna.trial.FrozenTrial]) -> set[int]:
    pts = {t.number: (-t.values[0], t.values[1], t.values[2]) for t in trials if t.values}
    return {n for n, p in pts.items()
            if not any(o != p and all(a <= b for a, b in zip(o, p, strict=True)) for o in pts.values())}


def _fake_search(tmp_path: Path, data, monkeypatch: pytest.MonkeyPatch, space_text: str) -> optuna.Study:
    """A real search (sampler, Objective, storage, report) whose trials measure ``OUTCOMES``."""
    from tiny_models import tiny_cnn

    def run(self, plan, path, deadline=None, on_step=None):  # noqa: ANN001, ANN202
        number = int(Path(path).stem.split("_")[1])
        drop, size, ratio = OUTCOMES[number]
        Path(path).write_bytes(b"artifact %d" % number)  # not the teacher's bytes: its ratio is measured
        m = Metrics(self.teacher_accuracy - drop, size, ratio, ratio, 1.0, 1, 1, 1,
                    latency_ratio=ratio, latency_ratio_low=ratio * 0.99, latency_ratio_high=ratio * 1.01)
        return TrialResult(plan, m, None, ratio, [], {})

    monkeypatch.setattr(Workbench, "run", run)
    torch.manual_seed(0)
    config = _config(tmp_path, n_trials=len(OUTCOMES), run_dir=str(tmp_path / "run"), keep_artifacts=False,
                     baselines=("teacher", "int8", "prune50"), profile=False, promote=0.0)  # as written
    return run_search(config, teacher=tiny_cnn().eval(), data=data, space=parse_space(space_text),
                      progress=False, log=lambda s: None)


def test_a_baseline_outside_the_space_runs_without_params(tmp_path, tiny_data, monkeypatch) -> None:
    study = _fake_search(tmp_path, tiny_data, monkeypatch, SPACE.replace("    sparsity: {low: 0.0, high: 0.9, "
                                                                         "step: 0.1}\n", ""))
    teacher, int8, prune50 = study.trials[:3]
    assert int8.params and set(int8.params) == set(teacher.params) == set(study.trials[3].params)
    assert {v for k, v in int8.params.items() if k.endswith(".bits")} == {8}
    assert prune50.params == {} and "sparsity is 0.5, a setting the space never makes" in \
        prune50.user_attrs["outside_space"]
    assert prune50.user_attrs["plan"]["layers"]["0"]["sparsity"] == 0.5  # it still ran its own plan


def test_optuna_dashboard_names_the_objectives_and_draws_autocomp_s_feasible_front(tmp_path, tiny_data,
                                                                                     monkeypatch) -> None:
    study = _fake_search(tmp_path, tiny_data, monkeypatch, SPACE)
    config = _config(tmp_path)
    ours = {t.number for t in pareto_trials(study)}
    assert ours == {0, 1, 4}
    assert {2, 3} <= _unconstrained_front(study.trials)  # what the dashboard drew before
    assert {t.number for t in study.best_trials} == ours  # Optuna's own constrained front agrees too

    storage = optuna.storages.get_storage(config.storage_url)
    summaries = _dashboard(storage, "/api/studies")["study_summaries"]
    detail = _dashboard(storage, f"/api/studies/{summaries[0]['study_id']}")
    assert detail["objective_names"] == ["accuracy", "size_bytes", "latency_ms"]
    assert dashboard_front(detail) == ours
    assert [t["constraints"][0] > 0 for t in detail["trials"]] == [d > 1.0 for d, _, _ in OUTCOMES]
    # Baselines included, every trial lives in one search space.
    union = {p["name"] for p in detail["union_search_space"]}
    assert {p["name"] for p in detail["intersection_search_space"]} == union
    assert union == {"0.bits", "0.sparsity", "3.bits", "3.sparsity", "7.bits", "7.sparsity", "9.bits",
                     "9.sparsity", "distill.temperature"}
    assert [t.user_attrs.get("baseline") for t in study.trials[:3]] == ["teacher", "int8", "prune50"]


@pytest.mark.e2e
def test_a_real_search_looks_the_same_in_optuna_dashboard(tmp_path: Path) -> None:
    from autocomp.cli import main

    assert main(["search", "--run-dir", str(tmp_path / "run"), "--study-name", "d", "--teacher-epochs", "3",
                 "--n-trials", "8", "--no-progress", "--promote", "0"]) == 0  # the dashboard knows no promotion
    url = f"sqlite:///{tmp_path / 'run' / 'study.db'}"
    study = optuna.load_study(study_name="d", storage=url)
    storage = optuna.storages.get_storage(url)
    study_id = _dashboard(storage, "/api/studies")["study_summaries"][0]["study_id"]
    detail = _dashboard(storage, f"/api/studies/{study_id}")
    assert detail["objective_names"] == list(OBJECTIVES)
    assert dashboard_front(detail) == {t.number for t in pareto_trials(study)}
    assert {p["name"] for p in detail["intersection_search_space"]} == {p["name"] for p in detail["union_search_space"]}
    assert all(t.params for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE)
