"""experiments/bench_runtimes.py: every competitor of one model on the builtin digits, in one process."""

from __future__ import annotations

from pathlib import Path

import pytest
from experiments_kit import load_experiment

from autocomp.config import SearchConfig
from autocomp.measure.latency import Ratio

pytestmark = pytest.mark.benchmark
pytest.importorskip("openvino", reason='OpenVINO is not installed (pip install -e ".[bench]")')
pytest.importorskip("nncf", reason='NNCF is not installed (pip install -e ".[bench]")')


@pytest.fixture(scope="module")
def bench():  # noqa: ANN201
    return load_experiment("bench_runtimes")


def test_verdict_reads_the_spread(bench) -> None:  # noqa: ANN001
    assert bench.verdict(Ratio(0.90, 0.85, 0.95, 10), 80.0, 79.0).startswith("faster, equal or better")
    assert bench.verdict(Ratio(0.98, 0.95, 1.01, 10), 80.0, 80.0).endswith("target met")
    assert "as fast" in bench.verdict(Ratio(0.98, 0.95, 1.01, 10), 80.0, 80.0)
    assert bench.verdict(Ratio(1.10, 1.05, 1.15, 10), 80.0, 70.0) == "slower, equal or better accuracy: target NOT met"
    assert bench.verdict(Ratio(0.50, 0.45, 0.55, 10), 79.9, 80.0).endswith("LOWER accuracy: target NOT met")


def test_one_model_side_by_side(bench, tmp_path: Path) -> None:  # noqa: ANN001
    setup = bench.Setup(SearchConfig(teacher_epochs=3), steps=3, batch_size=32)  # digits_cnn on the digits
    result = bench.bench("digits", setup, trials=1, min_seconds=0.3, tmp=tmp_path, log=lambda s: None)
    rows = {r["competitor"]: r for r in result["rows"]}
    assert list(rows) == ["ORT fp32", "ORT int8", "ORT searched", "OV fp32", "OV fp32 b", "OV int8", "OV int8 ptq",
                          "OV searched", "NNCF int8"]
    assert rows["ORT fp32"]["/ORT fp32"] == "1.000 [0.970-1.030]" and rows["OV fp32"]["/OV fp32"].startswith("1.000")
    acc = result["accuracy"]
    assert 80.0 < acc["ORT fp32"] == acc["OV fp32"] == acc["OV fp32 b"]  # the same fp32 graph on both runtimes
    assert acc["ORT int8"] == pytest.approx(acc["OV int8"], abs=2.0)  # one artifact, two int8 kernels
    assert all(0.0 <= a <= 100.0 for a in acc.values())
    # int8 runs on int8 kernels in OpenVINO, ours and NNCF's; fp32 stays f32 (the hint, not bf16).
    for name in ("OV int8", "OV int8 ptq", "NNCF int8"):
        assert set(result["kernels"][name]["Convolution"]) <= {"u8", "i8"}, result["kernels"][name]
    assert set(result["kernels"]["OV fp32"]["Convolution"]) == {"f32"}
    assert rows["ORT int8"]["bytes"] < rows["ORT fp32"]["bytes"] / 2
    # IRs of this 30 kB-weight CNN: the XML's per-op text is a fair part of the bytes.
    assert rows["OV int8"]["bytes"] < 0.8 * rows["OV fp32"]["bytes"] > rows["NNCF int8"]["bytes"]
    ratio = result["ov_int8_vs_nncf"]
    assert 0.0 < ratio.low <= ratio.median <= ratio.high and result["rounds"] >= 50
    assert "target" in result["verdict"] and set(result["searches"]) == {"onnxruntime", "openvino"}
    text = bench.markdown(result["rows"])
    assert text.splitlines()[0] == "| model | competitor | accuracy % | bytes | ms | /ORT fp32 | /OV fp32 |"


def test_unknown_model_is_one_line_error(bench, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    assert bench.main(["--models", "lenet5,bogus"]) == 2
    assert "unknown model(s) bogus" in capsys.readouterr().err
