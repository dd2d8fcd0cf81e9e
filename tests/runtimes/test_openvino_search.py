"""``autocomp search --runtime openvino`` end to end: the default demo and a torchvision model; their
study, report and card name OpenVINO, and the IR ``autocomp export`` writes scores the card's accuracy
when ``openvino.Core().compile_model`` loads it."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import optuna
import pytest

from autocomp.config import SearchConfig
from autocomp.runtimes import get_runtime
from autocomp.study.create import pareto_trials
from autocomp.study.records import study_attr

pytestmark = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                reason='OpenVINO is not installed (pip install -e ".[openvino]"; CI installs it)')

SMALL_SPACE = """\
version: 1
description: int8 or float per layer type, a short fine-tune (a torchvision model on a 2-core CPU)
layers:
  - type: Conv2d
    bits: [null, 8]
    group: convs
  - type: Linear
    bits: [null, 8]
    group: linears
global:
  temperature: 4.0
  alpha: 0.7
  steps: 10
  lr: 0.001
  batch_size: 32
constraints:
  max_accuracy_drop: 50.0
"""


def cli(args: list[str]) -> int:
    """``autocomp ARGS`` in this process: OpenVINO runs in its own process, so later forks of
    pytest's (DataLoader workers, other tests' subprocesses) stay safe."""
    from autocomp.cli import main

    return main(args)


def _ir_predictions(xml: Path, config: dict, x: np.ndarray) -> np.ndarray:
    """Inside OpenVINO's process: the IR compiled by OpenVINO itself, not through autocomp's session."""
    import openvino as ov

    compiled = ov.Core().compile_model(xml, "CPU", config)
    return np.concatenate([compiled(x[i : i + 256])[0].argmax(1) for i in range(0, len(x), 256)])


def _ir_accuracy(xml: Path, config: dict, settings: SearchConfig) -> float:
    """Top-1 of the IR, loaded by OpenVINO itself, on the whole validation split (what export measures)."""
    from autocomp.pipeline.setup import prepare

    _, data = prepare(replace(settings, val_samples=None), log=lambda s: None)
    from autocomp.runtimes._openvino import HOST

    x, y = data.val_x.numpy(), data.val_y.numpy()
    pred = HOST.call(_ir_predictions, xml, config, x)
    return 100.0 * float((pred == y).sum()) / len(y)


def _check_study(storage: str, name: str, run_dir: Path) -> optuna.Study:
    study = optuna.load_study(study_name=name, storage=storage)
    record = study_attr(study, "runtime")
    assert record["runtime"] == "openvino" and record["version"] == get_runtime("openvino").version()
    assert record["properties"]["INFERENCE_PRECISION_HINT"] == "f32" and record["threads"] == 1
    assert study.user_attrs["runtime"].startswith("OpenVINO ")
    assert study_attr(study, "teacher_reference")["runtime"] == "openvino"
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert done and all(t.user_attrs["metrics"]["runtime"].startswith("OpenVINO ") for t in done)
    html = (run_dir / "report.html").read_text()
    assert "Measured on: OpenVINO " in html and "latency (ms, OpenVINO)" in html
    return study


def _export_ir(storage: str, name: str, trial: int, out: Path, settings: SearchConfig) -> dict:
    assert cli(["export", "--storage", storage, "--study-name", name, "--trial", str(trial), "--out", str(out)]) == 0
    card = json.loads(Path(f"{out}.card.json").read_text())
    assert card["format"] == "openvino" and card["runtime"]["runtime"] == "openvino"
    assert out.is_file() and out.with_suffix(".bin").is_file()
    assert card["written_file_bytes"] == out.stat().st_size + out.with_suffix(".bin").stat().st_size
    assert "OpenVINO" in card["protocol"] and "OpenVINO" in Path(f"{out}.card.md").read_text()
    from autocomp.runtimes._openvino import compile_config

    measured = card["measured_now"]["accuracy"]
    assert _ir_accuracy(out, compile_config(), settings) == measured == card["written_file"]["accuracy"]
    return card


@pytest.mark.e2e
def test_default_demo_on_openvino_and_its_ir(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert cli(["search", "--runtime", "openvino", "--run-dir", str(run), "--study-name", "ov",
                 "--n-trials", "5", "--no-progress"]) == 0
    storage = f"sqlite:///{run / 'study.db'}"
    study = _check_study(storage, "ov", run)
    point = pareto_trials(study)[-1]
    card = _export_ir(storage, "ov", point.number, tmp_path / "point.xml", SearchConfig())
    assert card["measured_in_study"]["accuracy"] == card["measured_now"]["accuracy"]


@pytest.mark.slow
def test_a_torchvision_model_on_openvino(tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(SMALL_SPACE)
    run = tmp_path / "run"
    flags = ["--model", "torchvision:mobilenet_v2", "--image-size", "32", "--channels", "3", "--teacher-epochs", "1",
             "--train-samples", "512", "--val-samples", "200"]
    assert cli(["search", "--runtime", "openvino", "--run-dir", str(run), "--study-name", "tv", "--space", str(space),
                 "--n-trials", "2", "--baselines", "teacher,int8", "--no-progress", *flags]) == 0
    storage = f"sqlite:///{run / 'study.db'}"
    study = _check_study(storage, "tv", run)
    int8 = next(t for t in study.trials if t.user_attrs.get("baseline") == "int8")
    assert int8.state == optuna.trial.TrialState.COMPLETE
    settings = SearchConfig(model="torchvision:mobilenet_v2", image_size=32, channels=3, teacher_epochs=1,
                            train_samples=512, val_samples=200)
    card = _export_ir(storage, "tv", int8.number, tmp_path / "int8.xml", settings)
    session = get_runtime("openvino").open_file(tmp_path / "int8.xml")
    session.run(None, {"input": np.zeros((1, 3, 32, 32), np.float32)})
    convs = session.describe()["executed"]["Convolution"]
    assert set(convs) <= {"u8", "i8"}, convs  # the exported IR runs its convolutions int8
    assert card["written_file_bytes"] > 100_000
