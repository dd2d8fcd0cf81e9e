"""The real-workload path end to end on tiny images: a folder of mixed-size photos through search
and export, the preprocessing a device must reproduce, torchvision weights from the local cache,
and bad input that must stop before anything is written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from image_kit import make_image_folder

from autocomp.cli import main

SPACE = """\
version: 1
description: tiny space for the pipeline tests
layers:
  - type: Conv2d
    sparsity: {low: 0.0, high: 0.5, step: 0.25}
    bits: [null, 8, 4]
    group: convs
global:
  temperature: 4.0
  alpha: 0.5
  steps: 6
  lr: 0.001
  batch_size: 16
"""


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, Path]:
    tmp = tmp_path_factory.mktemp("pipe")
    folder = make_image_folder(tmp / "photos", per_class=16, val_per_class=8, sizes=(10, 48))
    (tmp / "space.yaml").write_text(SPACE)
    assert main(["search", "--dataset", str(folder), "--image-size", "16", "--resize", "20", "--val-samples", "12",
                 "--space", str(tmp / "space.yaml"), "--teacher-epochs", "3", "--n-trials", "4", "--workers", "1",
                 "--run-dir", str(tmp / "run"), "--study-name", "p", "--no-progress",
                 "--baselines", "teacher,int8"]) == 0
    return f"sqlite:///{tmp / 'run' / 'study.db'}", tmp, folder


def test_mixed_size_folder_search_records_its_preprocessing(searched) -> None:
    storage, _, folder = searched
    study = optuna.load_study(study_name="p", storage=storage)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    pre = study.user_attrs["preprocessing"]
    assert (pre["resize"], pre["crop"], pre["input_shape"]) == (20, 16, [3, 16, 16])
    assert pre["normalization"] == "computed from 48 training images (seeded sample)"
    assert pre["augment"] == "standard" and "random-resized crop 16" in pre["train_transform"]
    assert (pre["val_images"], pre["val_images_total"]) == (12, 24) and pre["in_memory"] is False
    for t in study.trials:  # the digest export checks the kept file against
        assert len(t.user_attrs["artifact_sha256"]) == 64


def test_export_reuses_the_stored_artifact_and_a_device_reproduces_its_accuracy(searched) -> None:
    """Apply the card's preprocessing by hand (plain torchvision) to the validation images, run the
    exported .onnx in ONNX Runtime: the accuracy is the card's final one."""
    import onnxruntime as ort
    import torchvision
    from torchvision import transforms as T

    storage, tmp, folder = searched
    study = optuna.load_study(study_name="p", storage=storage)
    trial = study.trials[-1]
    out = tmp / "m.acz"
    assert main(["export", "--storage", storage, "--study-name", "p", "--trial", str(trial.number), "--out", str(out),
                 "--no-progress"]) == 0
    assert out.read_bytes() == Path(trial.user_attrs["artifact"]).read_bytes()
    card = json.loads(Path(f"{out}.card.json").read_text())
    assert card["artifact_source"].startswith("the study's stored artifact") and card["matches_study_artifact"]
    assert card["preprocessing"] == study.user_attrs["preprocessing"]
    acc = card["accuracy"]
    assert acc["search_time"]["value"] == trial.values[0]
    assert "subset of 12 of the 24" in acc["search_time"]["measured_on"]
    assert acc["final"]["measured_on"] == "the whole validation split (24 images)"
    assert acc["final_on_search_subset"]["value"] == pytest.approx(trial.values[0])

    onnx_path = tmp / "m.onnx"
    assert main(["export", "--storage", storage, "--study-name", "p", "--trial", str(trial.number),
                 "--out", str(onnx_path), "--no-progress"]) == 0
    pre = card["preprocessing"]
    transform = T.Compose([T.Resize(pre["resize"]), T.CenterCrop(pre["crop"]), T.ToTensor(),
                           T.Normalize(pre["mean"], pre["std"])])
    val = torchvision.datasets.ImageFolder(str(folder / "val"), transform)
    session = ort.InferenceSession(str(onnx_path))
    x = torch.stack([val[i][0] for i in range(len(val))]).numpy()
    y = np.array([val[i][1] for i in range(len(val))])
    mine = 100.0 * float((session.run(None, {"input": x})[0].argmax(1) == y).mean())
    assert mine == pytest.approx(acc["final"]["value"], abs=1e-9)


def test_export_rebuilds_when_the_stored_file_changed(searched) -> None:
    storage, tmp, _ = searched
    study = optuna.load_study(study_name="p", storage=storage)
    trial = study.trials[-1]
    kept = Path(trial.user_attrs["artifact"])
    original = kept.read_bytes()
    kept.write_bytes(original[:-10] + b"0123456789")  # same size, other bytes
    try:
        out = tmp / "again.acz"
        assert main(["export", "--storage", storage, "--study-name", "p", "--trial", str(trial.number),
                     "--out", str(out), "--no-progress"]) == 0
    finally:
        kept.write_bytes(original)
    card = json.loads(Path(f"{out}.card.json").read_text())
    assert card["artifact_source"].startswith("rebuilt from the Plan")
    assert out.read_bytes() == original and card["matches_study_artifact"]  # the rebuild is bit for bit


def test_export_continues_the_fine_tune_and_records_both_accuracies(searched) -> None:
    storage, tmp, _ = searched
    out = tmp / "long.acz"
    assert main(["export", "--storage", storage, "--study-name", "p", "--trial", "3", "--out", str(out),
                 "--epochs", "2", "--no-progress"]) == 0
    card = json.loads(Path(f"{out}.card.json").read_text())
    acc = card["accuracy"]
    assert acc["final"]["fine_tune_steps"] == 6 + 6  # 2 epochs of 48 images in batches of 16
    assert acc["search_time"]["fine_tune_steps"] == 6
    assert "continued for 6 more steps" in card["artifact_source"]
    text = Path(f"{out}.card.md").read_text()
    assert "**final** (this file)" in text and "search-time (the study's)" in text


@pytest.mark.parametrize("out, fmt, message", [
    ("refused.bin", None, "cannot tell the format from .bin"),
    ("refused.acz", "onnx", "--format onnx writes .onnx files"),
    ("refused.onnx", "state_dict", "--format state_dict writes .pt or .pth files"),
])
def test_export_format_follows_the_extension_or_is_refused(searched, capsys, out: str, fmt: str | None,
                                                           message: str) -> None:
    storage, tmp, _ = searched
    argv = ["export", "--storage", storage, "--study-name", "p", "--trial", "1", "--out", str(tmp / out)]
    assert main(argv + (["--format", fmt] if fmt else [])) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp / out).exists() and not Path(f"{tmp / out}.card.json").exists()


def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str], str]]:
    empty = tmp / "empty"
    empty.mkdir()
    flat = tmp / "flat"
    flat.mkdir()
    from PIL import Image

    Image.new("RGB", (8, 8)).save(flat / "a.png")
    broken = make_image_folder(tmp / "broken", per_class=2)
    (broken / "train" / "class_2" / "0001.png").write_bytes(b"not an image")
    good = make_image_folder(tmp / "good", per_class=2)
    tv = ["--model", "torchvision:mobilenet_v3_small", "--dataset", str(good), "--image-size", "32"]
    return {
        "empty folder": (["--dataset", str(empty)], "not an image folder"),
        "no class folders": (["--dataset", str(flat)], "not an image folder"),
        "undecodable image": (["--dataset", str(broken), "--image-size", "16"], "cannot decode image"),
        "weights not cached": (tv + ["--weights", "IMAGENET1K_V1"], "are not in the local torch hub cache"),
        "unknown weights": (tv + ["--weights", "IMAGENET9K"], "unknown weights 'IMAGENET9K'"),
        "weights on a builtin model": (["--weights", "DEFAULT"], "needs a torchvision:NAME model"),
    }


def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty hub cache
    for case, (args, message) in _bad_inputs(tmp_path).items():
        run = tmp_path / f"run-{case.replace(' ', '_')}"
        assert main(["search", *args, "--run-dir", str(run), "--n-trials", "1", "--no-progress"]) == 2, case
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("autocomp: error: ") and message in err[0], (case, err)
        assert not run.exists(), case  # no run directory, so no study either


def test_weights_load_from_a_locally_saved_state(tmp_path: Path, monkeypatch) -> None:
    """No network: a state dict saved where torchvision's weights API looks stands in for the download."""
    import torchvision

    from autocomp.config import SearchConfig
    from autocomp.models.zoo import state_digest, weights_file
    from autocomp.pipeline.setup import prepare

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    weights = torchvision.models.MobileNet_V3_Small_Weights.IMAGENET1K_V1
    torch.manual_seed(1)
    saved = torchvision.models.mobilenet_v3_small()
    path = weights_file(weights)
    assert path.parent == tmp_path / "torch" / "hub" / "checkpoints"
    path.parent.mkdir(parents=True)
    torch.save(saved.state_dict(), path)
    folder = make_image_folder(tmp_path / "imgs", per_class=2)
    config = SearchConfig(model="torchvision:mobilenet_v3_small", weights="DEFAULT", dataset=str(folder),
                          image_size=32, workers=0)
    teacher, data = prepare(config, log=lambda s: None)
    assert state_digest(teacher) == state_digest(saved)
    pre = data.preprocessing
    assert pre["mean"] == [0.485, 0.456, 0.406] and "MobileNet_V3_Small_Weights.IMAGENET1K_V1" in pre["normalization"]
    assert (pre["resize"], pre["crop"]) == (37, 32)  # --image-size 32 at the weights' 256/224 ratio

    torch.save({"weights": torch.nn.Linear(2, 2)}, path)  # pickled code where weights belong
    with pytest.raises(Exception, match=r"weights_only=True") as info:
        prepare(config, log=lambda s: None)
    assert type(info.value).__name__ == "AutocompError" and "\n" not in str(info.value)


_PEAK = """\
import resource, sys
from autocomp.cli import main
code = main(sys.argv[1:])
print("PEAK_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, code)
"""


@pytest.mark.e2e
def test_peak_memory_does_not_follow_the_dataset_size(tmp_path: Path) -> None:
    """10x the training images, streamed: the peak stays put. Held as tensors at 96 px, the larger
    set alone would add ~330 MB (3,000 x 3 x 96 x 96 x 4 bytes). With glibc's default malloc
    arenas the small set's peak varied from 1,187 to 1,318 MB between runs here (and a 40 MB
    margin on 5x the images failed once); with one arena it stayed at 1,250-1,272 MB."""
    (tmp_path / "space.yaml").write_text(SPACE)
    peaks = {}
    for n in (60, 600):  # images per class: 300 and 3,000 training images
        folder = make_image_folder(tmp_path / f"d{n}", per_class=n, val_per_class=20, sizes=(40, 64), classes=5)
        argv = ["search", "--dataset", str(folder), "--image-size", "96", "--workers", "0", "--no-profile",
                "--teacher-epochs", "1",
                "--space", str(tmp_path / "space.yaml"), "--n-trials", "2", "--baselines", "teacher",
                "--run-dir", str(tmp_path / f"run{n}"), "--no-progress", "--train-threads", "1"]
        out = subprocess.run([sys.executable, "-c", _PEAK, *argv], capture_output=True, text=True,
                             env={"AUTOCOMP_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin",
                                  "MALLOC_ARENA_MAX": "1"})  # one malloc arena: steadier peaks
        line = [s for s in out.stdout.splitlines() if s.startswith("PEAK_KB")]
        assert line and line[0].endswith(" 0"), out.stderr[-2000:]
        peaks[n] = int(line[0].split()[1]) / 1024
    print(f"peak RSS MB by images per class: {peaks}")  # shown with -s; the numbers behind the margin
    assert peaks[600] - peaks[60] < 100, peaks  # MB


def test_python_api_searches_over_datasets(tmp_path: Path, tiny_data) -> None:
    """Map-style datasets given to autocomp.search stream through a DataLoader (worker processes)."""
    from tiny_models import tiny_cnn

    import autocomp

    torch.manual_seed(0)
    train = torch.utils.data.TensorDataset(tiny_data.train_x, tiny_data.train_y)
    val = torch.utils.data.TensorDataset(tiny_data.val_x, tiny_data.val_y)
    (tmp_path / "space.yaml").write_text(SPACE)
    study = autocomp.search(tiny_cnn().eval(), train, val, space=str(tmp_path / "space.yaml"), n_trials=3,
                            storage=f"sqlite:///{tmp_path / 's.db'}", study_name="ds", run_dir=str(tmp_path),
                            workers=1, baselines=("teacher",))
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    pre = study.user_attrs["preprocessing"]
    assert pre["in_memory"] is False
    assert pre["val_images"] == len(val) and pre["normalization"] == "none: inputs used as given"


def test_run_files_and_flags_take_the_preprocessing_settings(tmp_path: Path, capsys) -> None:
    from autocomp.config import SearchConfig, read_config_file

    path = tmp_path / "run.yaml"
    path.write_text("image_size: 224\nresize: 256\nmean: [0.485, 0.456, 0.406]\nstd: 0.25\naugment: light\n")
    settings = read_config_file(str(path))
    assert settings["mean"] == (0.485, 0.456, 0.406) and settings["std"] == (0.25,)
    config = SearchConfig(**{**settings, "std": (0.2, 0.2, 0.2)})
    assert config.data_spec.mean == (0.485, 0.456, 0.406) and config.data_spec.augment == "light"
    assert SearchConfig.from_dict(config.to_dict()) == config
    assert {"weights", "resize", "mean", "std", "augment"} <= set(config.identity())  # they define the study
    path.write_text("mean: [a, b]\n")
    with pytest.raises(Exception, match="mean: must be a list of numbers"):
        read_config_file(str(path))
    for flags, message in ((["--resize", "100", "--image-size", "128"], "resize: must be >= image_size"),
                           (["--mean", "0.5"], "--mean and --std go together"),
                           (["--std", "0,1", "--mean", "0,0"], "one value per channel"),
                           (["--workers", "-1"], "workers: must be 0 to 256")):
        assert main(["search", *flags, "--run-dir", str(tmp_path / "r"), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (flags, err)
    assert not (tmp_path / "r").exists()
