"""report.html: one self-contained page with every section, written fast."""

from __future__ import annotations

import re

import optuna
from report_synthetic import FIGURES, build_study, figures_in

from autocomp.report import write_report
from autocomp.report.frame import trials_frame
from autocomp.report.recommend import recommend


def test_page_has_every_section_and_plotly_once(make_study, tmp_path):
    study = make_study(n=40)
    storage = "sqlite:///runs/demo/study.db"
    paths = write_report(study, tmp_path, storage=storage, max_drop=2.0)
    page = paths["html"].read_text(encoding="utf-8")
    assert figures_in(page) == FIGURES
    assert len(re.findall(r"\* plotly\.js v\d", page)) == 1  # the library inlined once, not per figure
    assert "<script src" not in page  # self-contained: opens offline
    assert page.count("Plotly.newPlot(") == len(FIGURES)
    rec = recommend(trials_frame(study), 98.0, max_drop=2.0)
    assert f"autocomp export --storage {storage} --study-name synthetic --trial {rec.trial}" in page
    table = page[page.index("<h2>Pareto points</h2>"):page.index("<h2>Is the search")]
    assert table.count("<tr>") == len(study.best_trials)  # one body row per Pareto point (the header is styled)
    assert "recommended" in table
    assert "out of memory in trial 7" in page and "hopeless" in page  # failed and stopped trials listed
    assert not list(tmp_path.glob("*.part"))


def test_few_trials_still_give_a_page_with_notes(make_study, tmp_path):
    page = write_report(make_study(n=2), tmp_path)["html"].read_text()
    assert "importance needs at least" in page
    assert "pareto-2d" in figures_in(page) and "importance" not in figures_in(page)
    assert "STORAGE_URL" in page  # no storage given: a placeholder, never a wrong URL


def test_without_teacher_there_is_no_hypervolume_reference(make_study, tmp_path):
    page = write_report(make_study(n=12, teacher_attrs=False, baselines=False), tmp_path)["html"].read_text()
    assert "no reference point for the hypervolume" in page and "hypervolume" not in figures_in(page)
    assert "no teacher accuracy" in page


def test_all_trials_failed(tmp_path):
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, user_attrs={"fail_reason": "x"}))
    page = write_report(study, tmp_path)["html"].read_text()
    assert "No finished trials yet" in page and figures_in(page) == []


def test_two_hundred_trials_give_one_row_each(tmp_path):
    study = build_study(n=200, seed=1)
    paths = write_report(study, tmp_path / "big", storage="sqlite:///x.db")
    assert len(paths["csv"].read_text().splitlines()) == 1 + len(study.trials)
    assert len(figures_in(paths["html"].read_text())) >= 4


def test_study_names_are_escaped(tmp_path):
    page = write_report(build_study(n=2, name="a<b>&c"), tmp_path)["html"].read_text()
    assert "<h1>autocomp report: a&lt;b&gt;&amp;c</h1>" in page and "a<b>&c" not in page.split("</head>")[1]
