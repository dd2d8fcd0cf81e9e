"""experiments/benchmark.py: the side-by-side table, on the builtin digits with a short fine-tune."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from experiments_kit import ROOT, load_experiment

from autocomp.config import SearchConfig

pytestmark = pytest.mark.benchmark  # runs the benchmark script end to end

SPACE = """\
version: 1
description: small per-layer space with a short fine-tune, for a quick benchmark test
layers:
  - type: Conv2d
    sparsity: {low: 0.0, high: 0.8, step: 0.1}
    bits: [null, 8, 4]
  - type: Linear
    sparsity: {low: 0.0, high: 0.9, step: 0.1}
    bits: [null, 8, 4]
    rank: [1.0, 0.5]
global:
  temperature: {low: 1.0, high: 8.0}
  alpha: 0.7
  steps: 20
  lr: 0.001
  batch_size: 64
constraints:
  max_accuracy_drop: 5.0
"""


@pytest.fixture(scope="module")
def bench():  # noqa: ANN201
    return load_experiment("benchmark")


def test_scores_of_known_points(bench) -> None:  # noqa: ANN001
    teacher = bench.Teacher(accuracy=99.0, size_bytes=1000, latency_ms=1.0)
    point = {"accuracy": 98.0, "size_bytes": 500, "latency_ratio": 0.5, "baseline": ""}
    # Reference (97 %, 1000 B, 1.0x), ideal (100 %, 0, 0): the point's box is 1/3 x 1/2 x 1/2.
    assert bench.front_volume([point], teacher) == pytest.approx(1 / 12)
    assert bench.front_volume([point], teacher, objectives=2) == pytest.approx(1 / 6)
    worse = {**point, "accuracy": 96.0}  # below the reference: adds nothing
    assert bench.front_volume([worse], teacher) == 0.0
    assert bench.dominated(worse, [point]) and not bench.dominated(point, [worse])
    assert not bench.dominated(point, [point])  # equal is not dominated
    run = bench.Run("tpe", 0, [point, worse], started=2, wall_s=10.0, finetune_s=5.0, measure_s=3.0,
                    profile_s=1.0, profiled=True)
    scores = bench.run_scores(run, teacher, best_volume=0.5)
    assert scores["regret"] == pytest.approx(0.5 - 1 / 12)
    assert math.isnan(scores["x@0.5"]) and math.isnan(scores["x@0"])  # 1 point down is not within 0.5
    assert scores["x@1"] == pytest.approx(2.0) and scores["lat@1"] == pytest.approx(0.5)
    assert scores["trials/h"] == pytest.approx(720.0)
    level = {**point, "accuracy": 99.0, "size_bytes": 250}  # the teacher's accuracy: no drop
    found = bench.Run("tpe", 1, [point, level], started=2, wall_s=10.0, finetune_s=5.0, measure_s=3.0,
                      profile_s=1.0, profiled=True)
    assert bench.run_scores(found, teacher, 0.5)["x@0"] == 4.0
    # Over seeds, one with no point at no drop counts as the teacher (1x): median of 4x and 1x.
    row = bench.summarize(teacher, [run, found])["table"].set_index("run").loc["tpe"]
    assert row["x@0"] == pytest.approx(2.5) and row["x@1"] == pytest.approx(3.0)
    # The profile has its own column, and is not counted again as outside.
    assert scores["profile %"] == pytest.approx(10.0) and scores["outside %"] == pytest.approx(10.0)
    assert math.isnan(bench.run_scores(bench.Run("random", 0, [point], started=1, wall_s=1.0), teacher,
                                       0.5)["profile %"])


def _pt(trial: int, accuracy: float, size: int, latency: float, baseline: str = "") -> dict:
    return {"trial": trial, "accuracy": accuracy, "size_bytes": size, "latency_ratio": latency,
            "baseline": baseline, "seconds": {}, "seeded": False, "promoted_from": None}


def test_hv_of_the_first_fifth(bench) -> None:  # noqa: ANN001
    teacher = bench.Teacher(accuracy=99.0, size_bytes=1000, latency_ms=1.0)
    late = _pt(9, 98.0, 500, 0.5)  # box 1/3 x 1/2 x 1/2 = 1/12
    early = _pt(1, 98.0, 500, 0.75)  # half of it in latency: 1/24
    run = bench.Run("tpe", 0, [early, late], started=10)
    assert bench.early_volume(run, teacher) == pytest.approx(50.0)  # trials 0 and 1 of 10
    # Trial 1 promoted later (trial 9 re-ran it): at 20 % the run had trial 1's own point.
    replaced = bench.Run("tpe", 0, [late], replaced=[early], started=10)
    assert bench.early_volume(replaced, teacher) == pytest.approx(50.0)
    assert math.isnan(bench.early_volume(bench.Run("tpe", 0, [_pt(0, 90.0, 900, 1.0)], started=5), teacher))


def test_rows_are_the_searches_autocomp_runs(bench) -> None:  # noqa: ANN001
    config = SearchConfig(seeds=6, promote=0.2)
    tpe = bench.study_config(config, bench.arm("tpe"), 3)
    assert (tpe.sampler, tpe.profile, tpe.seeds, tpe.promote, tpe.seed, tpe.baselines) == ("tpe", True, 6, 0.2, 3, ())
    random = bench.study_config(config, bench.arm("random"), 0)
    assert (random.sampler, random.profile, random.promote) == ("random", False, 0.0)
    only = bench.arm("profile")
    assert only.only_seeds and bench.study_config(config, only, 0).profile
    assert bench.study_config(config, only, 0).promote == 0.0
    noprofile = bench.study_config(config, bench.arm("tpe-noprofile"), 0)
    assert (noprofile.sampler, noprofile.profile, noprofile.promote) == ("tpe", False, 0.2)
    spread = bench.arm("tpe-spread")
    assert (spread.sampler, spread.spread, bench.arm("tpe").spread) == ("tpe", True, False)
    assert bench.variant_sampler("tpe-spread", 0, 20) is None  # autocomp's own TPE
    nsga = bench.study_config(config, bench.arm("nsga2-noprofile"), 0)
    assert (nsga.sampler, nsga.profile) == ("nsga2", False)
    fixed = bench.study_config(config, bench.arm("baselines"), None, ["int8"])
    assert (fixed.profile, fixed.seeds, fixed.promote, fixed.baselines) == (False, 0, 0.0, ("int8",))
    assert bench.variant_sampler("tpe-indep-noprofile", 0, 20) is not None
    with pytest.raises(bench.AutocompError, match="unknown sampler 'bogus'"):
        bench.variant_sampler("bogus-noprofile", 0, 20)


def test_a_seed_with_no_point_within_1_point_counts_as_the_teacher_in_lat1(bench) -> None:  # noqa: ANN001
    teacher = bench.Teacher(accuracy=99.0, size_bytes=1000, latency_ms=1.0)
    runs = [bench.Run("tpe", 0, [_pt(0, 98.8, 200, 0.5)], started=1),
            bench.Run("tpe", 1, [_pt(0, 97.0, 200, 0.3)], started=1),  # 2 points down: none within 1
            bench.Run("tpe", 2, [_pt(0, 98.9, 200, 0.6)], started=1)]
    summary = bench.summarize(teacher, runs)
    assert summary["table"].set_index("run").loc["tpe", "lat@1"] == pytest.approx(0.6)  # of 0.5, 1.0, 0.6


def test_done_means_lines(bench) -> None:  # noqa: ANN001
    teacher = bench.Teacher(accuracy=99.0, size_bytes=1000, latency_ms=1.0)
    fixed = [_pt(0, 98.7, 250, 1.2, "int8"), _pt(1, 98.5, 500, 0.6, "channels50")]
    tpe = [bench.Run("tpe", s, [_pt(0, 98.8, 200, 0.5), _pt(1, 98.9, 240, 0.9)], started=2) for s in (0, 1)]
    tpe[1].points[0]["latency_ratio"] = 0.7  # seed 1: slower than channels50, which it no longer dominates
    only = [bench.Run("profile", 0, [_pt(0, 98.8, 200, 0.5), _pt(1, 98.0, 300, 0.8)], started=2)]
    runs = [bench.Run("baselines", None, fixed, started=2), *tpe, *only]
    summary = bench.summarize(teacher, runs)
    lines = summary["findings"]
    assert lines[0] == ("tpe's front dominates the uniform baselines in k of n seeds, latency ratios within 3% "
                        "counting as equal (in brackets: every difference counting): int8 2/2 (2), channels50 1/2 (1)")
    assert lines[1].startswith("lat@1 vs channels50 (0.60x at 0.5 points down)")
    assert "tpe 1/2 (median 0.60x)" in lines[1] and "profile 1/1 (median 0.50x)" in lines[1]
    # The profile's first point is tpe seed 0's own (matched), its second is dominated.
    assert lines[2].startswith("profile-only vs full search: tpe's pooled front dominates 1 and matches 1 of the "
                               "2 points of `profile`; no accuracy spread measured (fewer than 10 pairs of one plan's "
                               "fine-tunes, or points saved without their plan): every difference counts (0 neither)")
    # A profile point the search's front does not cover is named by its seed and trial, with the
    # accuracy the search reaches as small and as fast, where it has such a point.
    ahead = [{**_pt(0, 98.8, 200, 0.5), "seed": 0}, {**_pt(3, 99.5, 1_100, 0.4), "seed": 1},
             {**_pt(4, 99.0, 250, 0.6), "seed": 1}]
    line = bench.profile_line(teacher, tpe[0].points, ahead, summary["per_seed"], "tpe")
    assert ("matches 1 of the 3 points of `profile`; no accuracy spread measured (fewer than 10 pairs of one "
            "plan's fine-tunes, or points saved without their plan): every difference counts (2 neither: seed 1 "
            "trial 3 (99.50 %, 1,100 B, 0.40x; the search has no point as small and as fast); seed 1 trial 4 "
            "(99.00 %, 250 B, 0.60x; the search's most accurate as small and as fast: 98.80 % (-0.20 point)))") in line
    text = bench.report_text(SearchConfig(), teacher, summary, "benchmark", 1.0)
    assert "- profile-only vs full search" in text and "| profile | 1 | 2 |" in text
    # More accurate and smaller than int8 but 2 % slower (seed 0): dominates it only because that
    # is inside the latency tie; 8 % slower (seed 1) does not.
    close = [bench.Run("tpe", s, [_pt(0, 98.9, 240, lat)], started=1) for s, lat in ((0, 1.224), (1, 1.296))]
    assert "int8 1/2 (0)" in bench.summarize(teacher, [runs[0], *close])["findings"][0]


def test_the_fine_tunes_accuracy_spread_decides_what_a_shortfall_is(bench) -> None:  # noqa: ANN001
    # Ten plans, each at seeds 0 and 1, their accuracies 0.01 ... 0.10 point apart.
    runs = [bench.Run("tpe", seed, [{**_pt(k, 98.0 + seed * k / 100, 100, 0.5), "plan": f"p{k}"}
                                    for k in range(1, 11)]) for seed in (0, 1)]
    spread = bench.accuracy_spread(runs, 98.5)
    # The 90 % quantile, one of the differences seen: the 10th smallest of 10.
    assert (spread.pairs, spread.plans) == (10, 10) and spread.tie == pytest.approx(0.10)
    # The same fine-tune in another row (a plan at one seed, one accuracy), a promotion, a fixed
    # baseline, and a plan more than 1 point below the teacher pair with nothing.
    extra = [bench.Run("profile", 0, [{**_pt(0, 98.0, 100, 0.5), "plan": "p1"}]),
             bench.Run("tpe", 2, [{**_pt(11, 90.0, 100, 0.5), "plan": "p1", "promoted_from": 1},
                                  {**_pt(12, 97.0, 100, 0.5), "plan": "far"}]),
             bench.Run("tpe", 3, [{**_pt(12, 96.0, 100, 0.5), "plan": "far"}]),
             bench.Run("baselines", None, [{**_pt(0, 91.0, 100, 0.5, "int8"), "plan": "p2"}])]
    assert bench.accuracy_spread(runs + extra, 98.5) == spread
    # A fine-tune of one plan at one seed that came out different is another fine-tune: it pairs.
    again = bench.Run("profile", 1, [{**_pt(0, 98.5, 100, 0.5), "plan": "p10"}])
    assert bench.accuracy_spread(runs + [again], 98.5).pairs == 12  # (98.0, 98.1, 98.5): 3 pairs, not 1
    assert bench.accuracy_spread([bench.Run("tpe", s, r.points[:9]) for s, r in enumerate(runs)], 98.5) is None
    no_plans = [bench.Run("tpe", r.seed, [{k: v for k, v in p.items() if k != "plan"} for p in r.points])
                for r in runs]
    assert bench.accuracy_spread(no_plans, 98.5) is None  # saved before points named their plan
    teacher = bench.Teacher(accuracy=99.0, size_bytes=1000, latency_ms=1.0)
    front = [_pt(0, 98.62, 90, 0.61)]
    point = {**_pt(4, 98.66, 100, 0.6), "seed": 1}  # 0.04 point above a point as small and as fast
    assert bench.covered(point, front, tie=0.05) == "spread" and bench.covered(point, front, tie=0.03) == "no"
    assert bench.covered(point, front, tie=0.04) == "spread"  # as far behind as the spread: inside it
    assert bench.covered({**point, "accuracy": 98.62}, front, tie=0.0) == "dominated"
    assert bench.covered({**point, "accuracy": 98.6200000001}, front) == "no"  # no spread: every difference
    assert bench.covered({**point, "latency_ratio": 0.5}, front, tie=1.0) == "no"  # none as fast (beyond 3 %)
    per_seed = bench.summarize(teacher, runs)["per_seed"]
    line = bench.profile_line(teacher, front, [point], per_seed, "tpe", bench.Spread(0.05, 12, 5))
    assert ("matches 0 of the 1 points of `profile`; 1 not behind by more than the fine-tune's accuracy spread "
            "(0.05 point: the 90% quantile of 12 differences between fine-tunes of the 5 plans within 1 point run "
            "at more than one seed): seed 1 trial 4 (98.66 %, 100 B, 0.60x; the search's most accurate as small "
            "and as fast: 98.62 % (-0.04 point)) (0 neither)") in line


def test_a_saved_run_gets_its_plans_from_the_kept_studies(bench, tmp_path: Path) -> None:  # noqa: ANN001
    import json
    from dataclasses import asdict

    import optuna

    config = SearchConfig()
    folder = tmp_path / "lenet5"
    folder.mkdir()
    study = optuna.create_study(study_name=f"bench-{config.name}-tpe-s0", storage=f"sqlite:///{folder}.db",
                                directions=["maximize", "minimize", "minimize"])
    dist = {"fc1.bits": optuna.distributions.CategoricalDistribution([8, 4])}
    for bits, accuracy in ((8, 98.8), (4, 98.7), (4, 98.6)):
        study.add_trial(optuna.trial.create_trial(params={"fc1.bits": bits}, distributions=dist,
                                                  values=[accuracy, 100.0, 0.5]))
    teacher = bench.Teacher(accuracy=99.0, size_bytes=1000, latency_ms=1.0)
    # Trial 2's accuracy is not the stored one's (a study of another benchmark): it gets no plan.
    runs = [bench.Run("tpe", 0, [_pt(0, 98.8, 200, 0.5), _pt(1, 98.7, 190, 0.5), _pt(2, 98.0, 190, 0.5)],
                      started=3), bench.Run("random", 0, [_pt(0, 98.8, 200, 0.5)], started=1)]  # no such study
    (folder / "runs.json").write_text(json.dumps({"teacher": asdict(teacher), "config": config.to_dict(),
                                                  "runs": [asdict(r) for r in runs]}, default=str))
    tpe, random = bench.load_runs(folder / "runs.json")[2]
    assert [p.get("plan") for p in tpe.points] == [bench.plan_id({"fc1.bits": 8}), bench.plan_id({"fc1.bits": 4}),
                                                   None]
    assert bench.plan_id({"fc1.bits": 8}) != bench.plan_id({"fc1.bits": 4}) and "plan" not in random.points[0]
    (tmp_path / "lenet5.db").unlink()  # no studies kept: the points stay as saved
    assert "plan" not in bench.load_runs(folder / "runs.json")[2][0].points[0]


def test_rescore_prints_the_saved_runs_table(bench, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    import json
    from dataclasses import asdict

    teacher = bench.Teacher(accuracy=99.0, size_bytes=1000, latency_ms=1.0)
    runs = [bench.Run("baselines", None, [_pt(0, 98.7, 250, 0.7, "int8")], started=1),
            bench.Run("tpe", 0, [_pt(0, 98.8, 200, 0.5)], started=1, wall_s=60.0)]
    saved = tmp_path / "runs.json"
    saved.write_text(json.dumps({"teacher": asdict(teacher), "config": SearchConfig().to_dict(),
                                 "runs": [asdict(r) for r in runs]}, default=str))
    assert bench.main(["--rescore", str(saved)]) == 0
    out = capsys.readouterr().out
    assert "| tpe | 1 | 1 | 0.2400 |" in out  # (1.8 / 3) x 0.8 x 0.5
    assert "int8 1/1 (1)" in out and "Scored again from a saved run" in out
    # A run saved under the rule before 2026-12-07 (a promotion always stood for its original) is
    # split again: the original, more accurate than its promotion, is scored.
    lower = {**_pt(1, 98.7, 190, 0.5), "promoted_from": 0}
    runs[1] = bench.Run("tpe", 0, [lower], replaced=[_pt(0, 98.8, 200, 0.5)], started=2)
    saved.write_text(json.dumps({"teacher": asdict(teacher), "config": SearchConfig().to_dict(),
                                 "runs": [asdict(r) for r in runs]}, default=str))
    tpe = bench.load_runs(saved)[2][1]
    assert [p["trial"] for p in tpe.points] == [0] and tpe.replaced == [lower]
    saved.write_text("{not json")
    assert bench.main(["--rescore", str(saved)]) == 2
    assert capsys.readouterr().err.startswith(f"benchmark: error: cannot read {saved}:")


def test_benchmark_table_on_digits(bench, tmp_path: Path) -> None:  # noqa: ANN001
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    config = SearchConfig(teacher_epochs=5, space=str(space), seeds=2, promote=0.2)
    teacher, runs = bench.benchmark(config, samplers=["tpe", "random", "profile"], seeds=[0], n_trials=5,
                                    baselines=["teacher", "int8", "prune90", "channels50"], log=lambda s: None)
    assert [r.label for r in runs] == ["baselines", "tpe", "random", "profile"]
    assert runs[0].started == 4 and runs[1].started == runs[2].started == 5
    tpe, random, only = runs[1:]
    # tpe as `autocomp search` runs it: the seeded plans first, the search, one front point promoted.
    # (A seed stopped early as hopeless is not among the finished points.)
    finished = sorted(tpe.points + tpe.replaced, key=lambda p: p["trial"])
    seeded = [p["trial"] for p in finished if p["seeded"]]
    assert seeded and set(seeded) <= {0, 1} and tpe.profiled and tpe.profile_s > 0
    promoted = [p for p in finished if p["promoted_from"] is not None]
    assert len(promoted) == 1
    original = next(p for p in finished if p["trial"] == promoted[0]["promoted_from"])
    stands, left = (promoted[0], original) if promoted[0]["accuracy"] >= original["accuracy"] else \
        (original, promoted[0])
    assert tpe.replaced == [left] and stands in tpe.points  # one of the two scored: the more accurate
    assert all(len(p["plan"]) == 12 for r in runs for p in r.points + r.replaced)  # each point names its Plan
    assert not random.profiled and all(not p["seeded"] and p["promoted_from"] is None for p in random.points)
    # The seeded plans, nothing else: the 2 budgets', and those beating a baseline where one does.
    assert only.started >= 2 and all(p["seeded"] for p in only.points)
    assert 90.0 < teacher.accuracy <= 100.0 and teacher.size_bytes > 0 and teacher.latency_ms > 0
    summary = bench.summarize(teacher, runs)
    table = summary["table"]
    assert list(table.columns) == bench.COLUMNS
    assert table["run"].tolist() == ["tpe", "random", "profile", "baseline teacher", "baseline int8",
                                     "baseline prune90", "baseline channels50"]
    assert 0.0 <= summary["best_hv"] <= 1.0
    assert (table["regret"] >= 0).all() and (table["HV"] <= summary["best_hv"] + 1e-12).all()
    assert (table["HV"] + table["regret"] - summary["best_hv"]).abs().max() < 1e-9
    for col in ("x@0", "x@0.5", "x@1", "lat@1", "trials/h"):
        finite = table[col][table[col].notna()]
        assert (finite > 0).all(), col
    assert ((table["outside %"] >= 0) & (table["outside %"] <= 100)).all()
    shares = table.set_index("run")["profile %"]
    assert 0 < shares["tpe"] < 100 and 0 < shares["profile"] < 100 and math.isnan(shares["random"])
    fp32 = table.set_index("run").loc["baseline teacher"]
    assert fp32["x@1"] == pytest.approx(1.0) and 0.5 < fp32["lat@1"] < 2.0
    assert fp32["HV"] == 0.0  # the teacher itself sits on the reference's size and latency
    # Baselines run to the end (no early stop), and each is checked against the searches' fronts.
    assert set(summary["dominance"]["baseline"]) == {"int8", "prune90", "channels50"}
    assert {"dominated by tpe", "dominated by random", "dominated by profile"} <= set(summary["dominance"].columns)
    assert [line.split(" ")[0] for line in summary["findings"]] == ["tpe's", "lat@1", "profile-only"]
    text = bench.report_text(config, teacher, summary, "python experiments/benchmark.py --quick", 1.0)
    header = "| " + " | ".join(bench.COLUMNS) + " |"
    assert header in text and "| tpe | 1 | 5 |" in text and "| profile | 1 | 2 |" in text


def test_unknown_sampler_is_one_line_error(bench, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    code = bench.main(["--config", str(ROOT / "experiments" / "default.yaml"), "--samplers", "tpe,bogus"])
    assert code == 2
    assert "unknown sampler 'bogus'" in capsys.readouterr().err
