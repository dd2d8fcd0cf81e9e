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
    run = bench.Run("tpe", 0, [point, worse], started=2, wall_s=10.0, finetune_s=6.0, measure_s=3.0)
    scores = bench.run_scores(run, teacher, best_volume=0.5)
    assert scores["regret"] == pytest.approx(0.5 - 1 / 12)
    assert math.isnan(scores["x@0.5"])  # 1 point down is not within 0.5
    assert scores["x@1"] == pytest.approx(2.0) and scores["lat@1"] == pytest.approx(0.5)
    assert scores["trials/h"] == pytest.approx(720.0) and scores["outside %"] == pytest.approx(10.0)


def test_benchmark_table_on_digits(bench, tmp_path: Path) -> None:  # noqa: ANN001
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    config = SearchConfig(teacher_epochs=5, space=str(space))
    teacher, runs = bench.benchmark(config, samplers=["tpe", "random"], seeds=[0], n_trials=4,
                                    baselines=["teacher", "int8", "prune90"], log=lambda s: None)
    assert [r.label for r in runs] == ["baselines", "tpe", "random"]
    assert all(r.started == 4 for r in runs[1:]) and runs[0].started == 3
    assert 90.0 < teacher.accuracy <= 100.0 and teacher.size_bytes > 0 and teacher.latency_ms > 0
    summary = bench.summarize(teacher, runs)
    table = summary["table"]
    assert list(table.columns) == bench.COLUMNS
    assert table["run"].tolist() == ["tpe", "random", "baseline teacher", "baseline int8", "baseline prune90"]
    assert 0.0 <= summary["best_hv"] <= 1.0
    assert (table["regret"] >= 0).all() and (table["HV"] <= summary["best_hv"] + 1e-12).all()
    assert (table["HV"] + table["regret"] - summary["best_hv"]).abs().max() < 1e-9
    for col in ("x@0.5", "x@1", "lat@1", "trials/h"):
        finite = table[col][table[col].notna()]
        assert (finite > 0).all(), col
    assert ((table["outside %"] >= 0) & (table["outside %"] <= 100)).all()
    fp32 = table.set_index("run").loc["baseline teacher"]
    assert fp32["x@1"] == pytest.approx(1.0) and 0.5 < fp32["lat@1"] < 2.0
    assert fp32["HV"] == 0.0  # the teacher itself sits on the reference's size and latency
    # Baselines run to the end (no early stop), and each is checked against the searches' fronts.
    assert set(summary["dominance"]["baseline"]) == {"int8", "prune90"}
    assert {"dominated by tpe", "dominated by random"} <= set(summary["dominance"].columns)
    text = bench.report_text(config, teacher, summary, "python experiments/benchmark.py --quick", 1.0)
    header = "| " + " | ".join(bench.COLUMNS) + " |"
    assert header in text and "| tpe | 1 | 4 |" in text


def test_unknown_sampler_is_one_line_error(bench, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    code = bench.main(["--config", str(ROOT / "experiments" / "default.yaml"), "--samplers", "tpe,bogus"])
    assert code == 2
    assert "unknown sampler 'bogus'" in capsys.readouterr().err
