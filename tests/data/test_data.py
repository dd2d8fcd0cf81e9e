"""The data pipeline: streamed image folders, preprocessing matched to the model, seeded augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from image_kit import make_image_folder
from PIL import Image

from autocomp.data import DataBundle, DataSpec, Preprocess, StreamSplit, TensorSplit, bundle_from, load_data
from autocomp.errors import AutocompError
from autocomp.pipeline.finetune import distill_batches


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("imgs") / "imgs", per_class=10, sizes=(12, 40))


def _load(path: Path, **kw: object) -> object:
    spec = {"name": str(path), "image_size": 16, "workers": 0, **kw}
    return load_data(DataSpec(**spec), seed=0)


def test_mixed_size_folder_streams_at_one_size(folder: Path) -> None:
    data = _load(folder)
    assert isinstance(data.train, StreamSplit) and not data.caches_teacher_logits
    assert data.input_shape == (3, 16, 16) and (data.n_train, data.n_val, data.num_classes) == (30, 12, 3)
    xs = [x for x, _ in data.eval_batches(8)]
    assert [len(x) for x in xs] == [8, 4] and all(x.shape[1:] == (3, 16, 16) for x in xs)
    pre = data.preprocessing
    assert pre["augment"] == "standard" and pre["resize"] == 16 and pre["crop"] == 16  # photos: augmented
    assert pre["normalization"].startswith("computed from 30 training images")
    # Normalized with the statistics it recorded: the eval batches are ~zero-mean, unit-std per channel.
    train = torch.cat([x for x, _ in data.train.eval_batches(64)])
    assert train.mean(dim=(0, 2, 3)).abs().max() < 1e-4
    assert (train.std(dim=(0, 2, 3)) - 1).abs().max() < 1e-2


def test_eval_transform_matches_torchvision_weights_transforms_pixel_for_pixel(tmp_path: Path) -> None:
    """The preprocessing a --weights model gets is what `weights.transforms()` gives a user."""
    import torchvision

    from autocomp.models.zoo import weights_preprocess

    pre = weights_preprocess("torchvision:resnet18", "IMAGENET1K_V1")
    assert (pre.resize, pre.image_size, pre.mean) == (256, 224, (0.485, 0.456, 0.406))
    theirs = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.transforms()
    rng = np.random.default_rng(0)
    for w, h in ((300, 260), (97, 400)):
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        # Equal up to float rounding of the normalization (one pixel level would be 1/255/0.225 = 0.017).
        assert torch.allclose(pre.eval_transform()(img).as_subclass(torch.Tensor), theirs(img), rtol=0, atol=1e-6)


def test_normalization_order_flags_then_weights_then_sample(folder: Path) -> None:
    weights = Preprocess(image_size=16, resize=18, mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6), normalization="w")
    given = load_data(DataSpec(str(folder), workers=0, mean=(0.5,) * 3, std=(0.25,) * 3), defaults=weights)
    assert given.preprocess.mean == (0.5,) * 3 and given.preprocessing["normalization"] == "given by --mean/--std"
    assert (given.preprocess.resize, given.preprocess.image_size) == (18, 16)  # geometry still from the weights
    from_weights = load_data(DataSpec(str(folder), workers=0, image_size=32), defaults=weights)
    assert from_weights.preprocess.mean == (0.1, 0.2, 0.3) and from_weights.preprocessing["normalization"] == "w"
    assert (from_weights.preprocess.resize, from_weights.preprocess.image_size) == (36, 32)  # the weights' ratio
    sampled = _load(folder)
    assert sampled.preprocess.mean != (0.1, 0.2, 0.3) and "training images" in sampled.preprocessing["normalization"]


def test_augmentation_is_seeded_per_sample_whatever_the_workers(folder: Path) -> None:
    def first_batches(workers: int, seed: int, augment: str = "standard") -> list[torch.Tensor]:
        data = _load(folder, workers=workers, augment=augment)
        it = data.train_batches(8, seed)
        out = [next(it)[0] for _ in range(5)]  # 40 samples: crosses an epoch boundary
        it.close()
        return out

    a, b, c = first_batches(0, seed=3), first_batches(2, seed=3), first_batches(0, seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))  # same seed, any worker count: same
    assert not torch.equal(a[0], c[0])  # another seed: other crops and order
    off = first_batches(0, seed=3, augment="none")
    assert all(torch.equal(x, y) for x, y in zip(off, first_batches(2, seed=3, augment="none"), strict=True))
    # Off: each sample is exactly its eval transform; on: it is not.
    data = _load(folder, augment="none")
    ev = {tuple(x.flatten()[:6].tolist()) for batch, _ in data.train.eval_batches(64) for x in batch}
    assert all(tuple(x.flatten()[:6].tolist()) in ev for x in off[0])
    assert sum(tuple(x.flatten()[:6].tolist()) in ev for x in a[0]) < len(a[0])


def test_arrays_in_memory_and_streamed_give_the_same_samples(tmp_path: Path, monkeypatch) -> None:
    """The MNIST family's arrays: tensors in memory when small, streamed when not, same preprocessing."""
    import autocomp.data.load as data_mod

    root = tmp_path / "mnist"
    _fake_mnist(root)
    spec = DataSpec("mnist", data_dir=str(root), image_size=12, channels=3, workers=0)
    small = load_data(spec)
    assert isinstance(small, DataBundle) and small.caches_teacher_logits and small.input_shape == (3, 12, 12)
    monkeypatch.setattr(data_mod, "IN_MEMORY_BYTES", 1000)  # as if the dataset were huge
    big = load_data(spec)
    assert isinstance(big.train, StreamSplit) and not big.caches_teacher_logits
    assert big.preprocess == small.preprocess
    a = torch.cat([x for x, _ in small.eval_batches(16)])
    b = torch.cat([x for x, _ in big.eval_batches(16)])
    assert torch.allclose(a, b, atol=1e-6)


def _fake_mnist(root: Path, n_train: int = 40, n_val: int = 20) -> None:
    """A tiny MNIST in torchvision's processed layout (no network)."""
    import torchvision

    rng = np.random.default_rng(0)
    folder = root / "MNIST" / "processed"
    folder.mkdir(parents=True)
    for name, n in (("training.pt", n_train), ("test.pt", n_val)):
        torch.save((torch.tensor(rng.integers(0, 256, (n, 28, 28)), dtype=torch.uint8),
                    torch.tensor(rng.integers(0, 10, n))), folder / name)
    torchvision.datasets.MNIST(str(root))  # reads it, or the test setup is wrong


def test_val_subset_is_the_search_time_subset(folder: Path) -> None:
    full, part = _load(folder, augment="none"), _load(folder, augment="none", val_samples=5)
    assert part.n_val == 5 and part.preprocessing["val_subset"].startswith("seeded subset")
    a = np.concatenate([x for x, _ in full.val_subset(5, seed=0)])
    b = np.concatenate([x for x, _ in part.eval_set()])
    assert np.array_equal(a, b)


def test_calibration_and_example_are_eval_preprocessed_training_samples(folder: Path) -> None:
    data = _load(folder)
    first = next(data.train.eval_batches(32))[0]
    assert torch.equal(data.example(2), first[:2])
    (cal,) = data.calibration(n_batches=1, batch=32)
    assert np.array_equal(cal, first.numpy())


def test_teacher_runs_on_the_augmented_batch_and_equals_cached_logits_without_augmentation(tiny_data) -> None:
    from tiny_models import tiny_cnn

    torch.manual_seed(0)
    teacher = tiny_cnn().eval()
    with torch.no_grad():
        cached = teacher(tiny_data.train_x)
    live = distill_batches(tiny_data, 16, seed=1, teacher=teacher)
    stored = distill_batches(tiny_data, 16, seed=1, soft_targets=cached)
    for _ in range(3):
        (x1, y1, t1), (x2, y2, t2) = next(live), next(stored)
        assert torch.equal(x1, x2) and torch.equal(y1, y2) and torch.allclose(t1, t2, atol=1e-5)


def test_python_api_datasets_stream_as_given() -> None:
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(20, 1, 6, 6, generator=gen), torch.arange(20) % 4
    ds = torch.utils.data.TensorDataset(x, y)
    data = bundle_from(ds, ds, workers=0)
    assert isinstance(data.train, StreamSplit) and data.num_classes == 4
    assert torch.equal(torch.cat([b for b, _ in data.eval_batches(7)]), x)
    tensors = bundle_from((x, y), (x, y))
    assert isinstance(tensors.train, TensorSplit) and torch.equal(tensors.val_x, x)


@pytest.mark.parametrize("make, message", [
    (lambda p: p.mkdir(), "not an image folder"),
    (lambda p: (p.mkdir(), Image.new("RGB", (8, 8)).save(p / "a.png")), "not an image folder"),
    (lambda p: (make_image_folder(p, per_class=2), (p / "train" / "class_1" / "0001.png").write_bytes(b"junk")),
     "cannot decode image"),
    (lambda p: (make_image_folder(p, per_class=2), _truncate(p / "val" / "class_0" / "0000.jpg")),
     "cannot decode image"),
])
def test_bad_folders_are_one_line_errors(tmp_path: Path, make, message: str) -> None:
    path = tmp_path / "d"
    make(path)
    with pytest.raises(AutocompError, match=message) as info:
        _load(path)
    assert "\n" not in str(info.value)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:150])


def test_mixed_sizes_without_an_image_size_say_so(folder: Path) -> None:
    with pytest.raises(AutocompError, match="different sizes .* pass --image-size"):
        load_data(DataSpec(str(folder), workers=0))


def test_a_verified_folder_is_not_decoded_again(tmp_path: Path, monkeypatch) -> None:
    from autocomp.data import sources

    path = make_image_folder(tmp_path / "v", per_class=2)
    sizes = sources.check_images(sorted(str(p) for p in path.rglob("*.*g")))
    calls = []
    monkeypatch.setattr(sources.ThreadPoolExecutor, "map", lambda *a, **k: calls.append(1) or [])
    assert sources.check_images(sorted(str(p) for p in path.rglob("*.*g"))) == sizes and not calls
    (path / "train" / "class_0" / "0000.jpg").write_bytes(b"changed")  # another file set: checked again
    with pytest.raises(AutocompError):
        monkeypatch.undo()
        sources.check_images(sorted(str(p) for p in path.rglob("*.*g")))


USER_DATA = '''
import numpy as np, torch
from PIL import Image

def pairs(kind):
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, size=(6, 1, 5, 5)).astype(np.uint8)
    make = {"uint8": torch.from_numpy, "float": lambda a: torch.from_numpy(a).float() / 7,
            "pil": lambda a: Image.fromarray(a[0])}[kind]
    items = [(make(a), i % 2) for i, a in enumerate(raw)]
    return items, items

def uint8(): return pairs("uint8")
def floats(): return pairs("float")
def pil(): return pairs("pil")
'''


@pytest.mark.parametrize("name, scale", [("uint8", 1 / 255), ("floats", 1.0), ("pil", 1 / 255)])
def test_a_callable_dataset_records_the_scale_of_its_own_samples(tmp_path: Path, name: str, scale: float) -> None:
    """The record's multiply_by turns a stored sample into the float the model's input is made from."""
    (tmp_path / "userdata.py").write_text(USER_DATA)
    data = load_data(DataSpec(f"{tmp_path / 'userdata.py'}:{name}", workers=0))
    pre = data.preprocessing
    assert pre["pixel_scale"]["multiply_by"] == scale and pre["split"]["method"] == "callable"
    assert pre["split"]["val_subset"] is None  # the whole validation split
    from autocomp.data.sources import raw_datasets

    stored, _ = raw_datasets(f"{tmp_path / 'userdata.py'}:{name}", None, False).val[0]
    array = np.asarray(stored, dtype=np.float32).reshape(1, 5, 5)
    mean, std = (np.float32(v[0]) for v in (pre["mean"], pre["std"]))
    rebuilt = (array * np.float32(scale) - mean) / std
    assert np.array_equal(rebuilt, next(iter(data.eval_batches(1)))[0][0].numpy())
