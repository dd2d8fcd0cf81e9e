"""Records that reproduce their numbers (issue 19): from the study's ``preprocessing`` record and the
exported file alone, an outsider rebuilds the validation images and gets the card's accuracy exactly.

The outsider (``rebuild_validation``, ``onnx_accuracy`` and their helpers) imports no autocomp code:
only numpy, PIL, scikit-learn's and torchvision's dataset readers, and ONNX Runtime on the plain
ONNX file ``autocomp export --out x.onnx`` writes. The quick tests hold the rebuilt inputs against
``load_data``'s bit for bit; the others run a one-trial search and an export, then score the file
(digits in the quick loop, about 6 s; the folder and MNIST ones are marked e2e and slow).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


# --- the outsider: no autocomp below this line (until "autocomp's side") -------------------------

def _listed(record: dict, name: str) -> list:
    """A list from the record, checked against its digest (sha256 of the items joined by newlines)."""
    items = record[name]
    assert hashlib.sha256("\n".join(str(v) for v in items).encode()).hexdigest() == record[f"{name}_sha256"]
    return items


def _to_float(stored: np.ndarray, pixel: dict) -> np.ndarray:
    return stored.astype(np.float32) * np.float32(pixel["multiply_by"])


def _normalize(x: np.ndarray, pre: dict) -> np.ndarray:
    if pre["mean"] is None:
        return x
    mean = np.asarray(pre["mean"], dtype=np.float32)[:, None, None]
    std = np.asarray(pre["std"], dtype=np.float32)[:, None, None]
    return (x - mean) / std


def _pil_pixels(path: Path, pre: dict) -> np.ndarray:
    """One image file as the record says: decode to RGB, resize the shorter side, center crop."""
    assert pre["channels"] is None and pre["interpolation"] == "bilinear"
    im = Image.open(path).convert("RGB")
    if pre["resize"]:
        w, h = im.size
        r = pre["resize"]
        size = (r, int(r * h / w)) if w <= h else (int(r * w / h), r)
        if size != im.size:
            im = im.resize(size, resample=Image.BILINEAR)
    if pre["crop"]:
        w, h, c = *im.size, pre["crop"]
        assert w >= c and h >= c
        top, left = int(round((h - c) / 2.0)), int(round((w - c) / 2.0))
        im = im.crop((left, top, left + c, top + c))
    return np.asarray(im).transpose(2, 0, 1)


def _stored_validation(split: dict, root: Path | None) -> tuple[np.ndarray | list, np.ndarray]:
    """The validation split's stored samples (arrays, or image paths) and labels, from its reader."""
    if split["reader"] == "sklearn.datasets.load_digits()":
        from sklearn.datasets import load_digits

        digits, idx = load_digits(), _listed(split, "val_indices")
        return digits.images[idx][:, None], digits.target[idx]
    if split["reader"].startswith("torchvision.datasets.ImageFolder"):
        files = _listed(split, "val_files")
        under = 0 if split["method"] == "random_split" else 1  # root/<class>/f or root/val/<class>/f
        labels = np.asarray([split["classes"].index(Path(f).parts[under]) for f in files])
        return [root / f for f in files], labels
    import torchvision

    assert split["method"] == "the dataset's own splits" and split["reader"].endswith("(root, train=False)")
    name = split["reader"].removeprefix("torchvision.datasets.").split("(")[0]
    ds = getattr(torchvision.datasets, name)(split["root"], train=False)
    return np.asarray(ds.data)[:, None], np.asarray(ds.targets)


def rebuild_validation(pre: dict, root: Path | None = None, subset: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The model's inputs and labels for the whole validation split (or the search's subset of it)."""
    split = pre["split"]
    stored, labels = _stored_validation(split, root)
    if isinstance(stored, list):
        stored = np.stack([_pil_pixels(p, pre) for p in stored])
    x = _normalize(_to_float(stored, pre["pixel_scale"]), pre)
    assert list(x.shape[1:]) == pre["input_shape"]
    if subset:
        keep = _listed(split["val_subset"], "indices")
        x, labels = x[keep], labels[keep]
    return x, labels


def onnx_accuracy(path: Path, x: np.ndarray, y: np.ndarray, batch: int = 64) -> float:
    """Top-1 percent of a plain ONNX file in ONNX Runtime (one thread, CPU)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    correct = 0
    for s in range(0, len(x), batch):
        logits = session.run(None, {name: np.ascontiguousarray(x[s : s + batch])})[0]
        correct += int((logits.argmax(axis=1) == y[s : s + batch]).sum())
    return 100.0 * correct / len(y)


# --- autocomp's side: the data it measured on, a search, an export -------------------------------

def _autocomp_val(data) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    xs, ys = zip(*((x.numpy(), y.numpy()) for x, y in data.eval_batches(64)), strict=True)
    return np.concatenate(xs), np.concatenate(ys)


def _folder(tmp_path: Path, split: bool) -> Path:
    from image_kit import make_image_folder

    return make_image_folder(tmp_path / "photos", per_class=10, classes=3, sizes=(14, 30), split=split,
                             val_per_class=4)


def test_digits_record_rebuilds_the_validation_images_bit_for_bit() -> None:
    from autocomp.data import DataSpec, load_data

    whole = load_data(DataSpec())
    part = load_data(DataSpec(val_samples=50))
    x, y = rebuild_validation(part.preprocessing)  # the subset's record names the whole split too
    ax, ay = _autocomp_val(whole)
    assert np.array_equal(x, ax) and np.array_equal(y, ay)
    x, y = rebuild_validation(part.preprocessing, subset=True)
    ax, ay = _autocomp_val(part)
    assert len(y) == 50 and np.array_equal(x, ax) and np.array_equal(y, ay)
    pre = part.preprocessing
    assert pre["pixel_scale"]["multiply_by"] == 1 / 16 and "255" not in pre["eval_transform"]  # the old claim


@pytest.mark.parametrize("split", [False, True], ids=["random-split", "train-val-folders"])
def test_folder_record_rebuilds_resized_cropped_images_bit_for_bit(tmp_path: Path, split: bool) -> None:
    from autocomp.data import DataSpec, load_data

    root = _folder(tmp_path, split)
    data = load_data(DataSpec(str(root), image_size=12, resize=14, val_samples=5, workers=0))
    pre = data.preprocessing
    assert pre["split"]["method"] == ("folders" if split else "random_split")
    x, y = rebuild_validation(pre, root, subset=True)
    ax, ay = _autocomp_val(data)
    assert x.shape == (5, 3, 12, 12) and np.array_equal(x, ax) and np.array_equal(y, ay)
    # Dividing by 255 instead of multiplying by float32(1/255) changes inputs in the last bit.
    stored = np.arange(256, dtype=np.uint8)
    assert not np.array_equal(_to_float(stored, pre["pixel_scale"]), stored.astype(np.float32) / np.float32(255))


def test_mnist_record_rebuilds_the_validation_images_bit_for_bit() -> None:
    if not (MNIST / "MNIST" / "raw").is_dir():
        pytest.skip(f"MNIST not found at {MNIST}")
    from autocomp.data import DataSpec, load_data

    data = load_data(DataSpec("mnist", str(MNIST), train_samples=500, val_samples=300))
    pre = data.preprocessing
    assert pre["pixel_scale"]["dtype"] == "uint8" and pre["pixel_scale"]["multiply_by"] == 1 / 255
    assert pre["split"]["val_subset"]["n"] == 10_000 and pre["split"]["train_subset"]["k"] == 500
    x, y = rebuild_validation(pre, subset=True)
    ax, ay = _autocomp_val(data)
    assert np.array_equal(x, ax) and np.array_equal(y, ay)


def _search_export(tmp_path: Path, args: list[str]) -> tuple[dict, dict, dict]:
    """A one-trial search (the int8 baseline) and its ``--out x.onnx`` export: the study's
    ``preprocessing`` record, the trial's stored metrics and the card."""
    import optuna

    from autocomp.cli import main

    storage = f"sqlite:///{tmp_path / 's.db'}"
    assert main(["search", "--storage", storage, "--study-name", "r", "--run-dir", str(tmp_path / "run"),
                 "--n-trials", "1", "--baselines", "int8", "--space", "uniform", "--no-progress", *args]) == 0
    out = tmp_path / "x.onnx"
    assert main(["export", "--storage", storage, "--study-name", "r", "--trial", "0", "--out", str(out),
                 "--no-progress"]) == 0
    study = optuna.load_study(study_name="r", storage=storage)
    card = json.loads(Path(f"{out}.card.json").read_text())
    return study.user_attrs["preprocessing"], study.trials[0].user_attrs["metrics"], card


def _reproduces(tmp_path: Path, pre: dict, metrics: dict, card: dict, root: Path | None = None) -> None:
    onnx = tmp_path / "x.onnx"
    final = onnx_accuracy(onnx, *rebuild_validation(pre, root))
    assert final == card["accuracy"]["final"]["value"]  # exactly: the same images, the same file
    searched = onnx_accuracy(onnx, *rebuild_validation(pre, root, subset=True))
    assert searched == card["accuracy"]["final_on_search_subset"]["value"] == metrics["accuracy"]


def test_digits_card_accuracy_reproduces_from_the_record(tmp_path: Path) -> None:
    pre, metrics, card = _search_export(tmp_path, ["--teacher-epochs", "2", "--val-samples", "100"])
    _reproduces(tmp_path, pre, metrics, card)


@pytest.mark.e2e
def test_folder_card_accuracy_reproduces_from_the_record(tmp_path: Path) -> None:
    root = _folder(tmp_path, split=False)
    pre, metrics, card = _search_export(tmp_path, [
        "--dataset", str(root), "--image-size", "12", "--resize", "14", "--teacher-epochs", "2",
        "--val-samples", "5", "--workers", "0", "--augment", "none"])
    _reproduces(tmp_path, pre, metrics, card, root)


@pytest.mark.slow
def test_mnist_card_accuracy_reproduces_from_the_record(tmp_path: Path) -> None:
    if not (MNIST / "MNIST" / "raw").is_dir():
        pytest.skip(f"MNIST not found at {MNIST}")
    pre, metrics, card = _search_export(tmp_path, [
        "--model", "lenet5", "--dataset", "mnist", "--data-dir", str(MNIST), "--train-samples", "1000",
        "--teacher-epochs", "1", "--val-samples", "500"])
    _reproduces(tmp_path, pre, metrics, card)
