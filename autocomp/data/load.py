"""``load_data``: raw splits -> preprocessing -> ``Data``; ``bundle_from`` for data given in Python."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import torch

from autocomp.data.bundle import Data, DataBundle
from autocomp.data.preprocess import Preprocess, channel_stats
from autocomp.data.provenance import GIVEN_SPLIT, subset_record
from autocomp.data.sources import Raw, raw_datasets
from autocomp.data.splits import StreamSplit, TensorSplit, seeded_subset
from autocomp.errors import AutocompError

IN_MEMORY_BYTES = 1 << 30  # preprocessed splits up to this size are held as tensors (when unaugmented)
STATS_SAMPLE = 2000  # training images the normalization statistics are computed from
# In-memory training splits up to this size (MNIST: 188 MB) get their statistics from every
# image, in float32 as before streaming existed, so their teachers and studies stay the same.
EXACT_STATS_BYTES = 256 << 20


@dataclass(frozen=True)
class DataSpec:
    name: str = "digits"
    data_dir: str | None = None
    image_size: int | None = None  # center crop (and random-resized crop) size
    channels: int | None = None  # convert to this many channels (1 <-> 3)
    train_samples: int | None = None  # keep N (a seeded subset)
    val_samples: int | None = None
    download: bool = False
    resize: int | None = None  # shorter side before the center crop
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    augment: str | None = None  # none | light | standard; None: standard for photos, none otherwise
    workers: int | None = None  # DataLoader worker processes for streamed splits


def default_workers() -> int:
    return min(8, max(1, (os.cpu_count() or 1) - 1))


def load_data(spec: DataSpec, seed: int = 0, defaults: Preprocess | None = None,
              progress: Callable | None = None, log: Callable[[str], None] | None = None) -> Data:
    """Raw splits -> preprocessing -> ``Data``. ``defaults``: the model's own (torchvision weights).

    ``log`` hears warnings (an image folder's skipped files); without it they go to stderr."""
    raw = raw_datasets(spec.name, spec.data_dir, spec.download, progress)
    if raw.skipped:
        (log or _stderr)(f"warning: {raw.skipped}")
    augment = spec.augment or ("standard" if raw.photo else "none")
    pre = _geometry(spec, raw, defaults, augment)
    workers = default_workers() if spec.workers is None else spec.workers
    if raw.arrays is not None:
        tx, ty, vx, vy = raw.arrays
        n_train_all, n_val_all = len(tx), len(vx)
        t_idx = seeded_subset(len(tx), spec.train_samples, seed)
        v_idx = seeded_subset(len(vx), spec.val_samples, seed)
        if t_idx is not None:
            tx, ty = tx[t_idx], ty[t_idx]
        if v_idx is not None:
            vx, vy = vx[v_idx], vy[v_idx]
        _nonempty(spec.name, len(tx), len(vx))
        num_classes = int(max(ty.max(), vy.max())) + 1
        exact = len(tx) * _sample_bytes(tx, pre) <= EXACT_STATS_BYTES
        sample = None if exact else seeded_subset(len(tx), STATS_SAMPLE, seed)
        pre = _normalization(spec, pre, defaults, lambda: _array_batches(
            tx if sample is None else tx[sample], pre.eval_transform(normalize=False)), exact=exact)
        train = _array_split(tx, ty, pre, augment, workers, "the training split")
        val = _array_split(vx, vy, pre, "none", workers, "the validation split")
    else:
        n_train_all, n_val_all = len(raw.train), len(raw.val)
        t_idx = seeded_subset(n_train_all, spec.train_samples, seed)
        v_idx = seeded_subset(n_val_all, spec.val_samples, seed)
        _nonempty(spec.name, len(t_idx) if t_idx is not None else n_train_all,
                  len(v_idx) if v_idx is not None else n_val_all)
        num_classes = raw.classes or _num_classes(raw, spec.name)

        def split(ds: object, idx: list[int] | None, aug: str, what: str) -> StreamSplit:
            return StreamSplit(ds, idx, pre.eval_transform(), pre.train_transform(aug), workers, what)

        stats_idx = seeded_subset(len(t_idx) if t_idx is not None else n_train_all, STATS_SAMPLE, seed)
        base = t_idx if t_idx is not None else list(range(n_train_all))
        unnormalized = StreamSplit(raw.train, [base[i] for i in stats_idx] if stats_idx is not None else base,
                                   pre.eval_transform(normalize=False), None, workers, "the training split")
        pre = _normalization(spec, pre, defaults, lambda: (x for x, _ in _progress(
            unnormalized.eval_batches(64), progress, "normalization statistics", len(unnormalized))))
        train = split(raw.train, t_idx, augment, "the training split")
        val = split(raw.val, v_idx, "none", "the validation split")
    if num_classes < 2:
        raise AutocompError(f"dataset {spec.name!r} has {num_classes} class: a classifier needs at least 2")
    notes = {"dataset": spec.name, "train_images_total": n_train_all, "val_images_total": n_val_all,
             "val_subset": f"seeded subset (seed {seed})" if v_idx is not None else "the whole validation split",
             "in_memory": train.in_memory, "pixel_scale": raw.pixels,
             # The validation split is the whole of "split"; --val-samples ranks on "val_subset" of it.
             "split": {**(raw.split or {}), "val_subset": subset_record(v_idx, n_val_all, seed),
                       "train_subset": subset_record(t_idx, n_train_all, seed, with_list=False)},
             **_reading(raw)}
    if isinstance(train, TensorSplit) and isinstance(val, TensorSplit):  # all in memory: tensors at hand
        return DataBundle(train.x, train.y, val.x, val.y, num_classes, [], [], pre, notes)
    return Data(train, val, num_classes, pre, augment, notes)


def _reading(raw: Raw) -> dict:
    """How files became images and which label is which class, where the source says."""
    out: dict = {}
    if raw.class_to_idx is not None:
        out["class_to_idx"] = raw.class_to_idx
    if raw.decode is not None:
        out["decode"] = raw.decode
    if raw.skipped_counts:
        out["skipped"] = {"line": raw.skipped, "counts": raw.skipped_counts}
    return out


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def _geometry(spec: DataSpec, raw: Raw, defaults: Preprocess | None, augment: str) -> Preprocess:
    size = spec.image_size or (defaults.image_size if defaults else None)
    resize = spec.resize
    if resize is None and size is not None:
        # The weights' ratio (256 / 224) when the model comes with one, else no margin.
        ratio = defaults.resize / defaults.image_size if defaults and defaults.resize and defaults.image_size else 1.0
        resize = int(round(size * ratio))
    if size is None and resize is not None:
        size = resize
    if size is None:
        sizes = raw.image_sizes or ({tuple(raw.arrays[0].shape[-1:-3:-1])} if raw.arrays is not None else None)
        if sizes and len(sizes) > 1:
            some = ", ".join(f"{w}x{h}" for w, h in sorted(sizes)[:2])
            raise AutocompError(f"dataset {spec.name}: images have {len(sizes)} different sizes ({some}, ...): "
                                "pass --image-size (and --resize)")
        if augment != "none":
            (w, h), = sizes or {(0, 1)}
            if w != h:
                raise AutocompError(f"--augment {augment} needs --image-size for dataset {spec.name}")
            size = w
    interpolation = defaults.interpolation if defaults else "bilinear"
    return Preprocess(image_size=size, resize=resize, channels=spec.channels, interpolation=interpolation)


def _normalization(spec: DataSpec, pre: Preprocess, defaults: Preprocess | None,
                   batches: Callable[[], Iterator[torch.Tensor]], exact: bool = False) -> Preprocess:
    if spec.mean is not None or spec.std is not None:
        if spec.mean is None or spec.std is None or len(spec.mean) != len(spec.std):
            raise AutocompError("--mean and --std must be given together, one value per channel")
        return replace(pre, mean=tuple(spec.mean), std=tuple(spec.std), normalization="given by --mean/--std")
    if defaults is not None and defaults.mean is not None:
        return replace(pre, mean=defaults.mean, std=defaults.std, normalization=defaults.normalization)
    if exact:
        x = torch.cat(list(batches()))
        mean = tuple(x.mean(dim=(0, 2, 3)).tolist())
        std = tuple(x.std(dim=(0, 2, 3)).clamp_min(1e-6).tolist())
        return replace(pre, mean=mean, std=std, normalization=f"computed from all {len(x)} training images")
    try:
        mean, std, n = channel_stats(batches())
    except ValueError:
        raise AutocompError(f"dataset {spec.name!r} has no training images") from None
    return replace(pre, mean=mean, std=std, normalization=f"computed from {n} training images (seeded sample)")


def _sample_bytes(x: torch.Tensor, pre: Preprocess) -> int:
    return 4 * int(pre.eval_transform(normalize=False)(x[:1]).numel())


def _array_batches(x: torch.Tensor, transform: Callable, chunk: int = 512) -> Iterator[torch.Tensor]:
    for start in range(0, len(x), chunk):
        yield transform(x[start : start + chunk]).as_subclass(torch.Tensor)


class _ArrayItems(torch.utils.data.Dataset):
    """Samples of an in-memory array, raw (uint8 or float), for streamed preprocessing."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], int(self.y[i])


def _array_split(x: torch.Tensor, y: torch.Tensor, pre: Preprocess, augment: str, workers: int,
                 what: str) -> TensorSplit | StreamSplit:
    transform = pre.eval_transform()
    shape = transform(x[:1]).shape[1:]
    if augment == "none" and len(x) * int(torch.Size(shape).numel()) * 4 <= IN_MEMORY_BYTES:
        out = torch.empty((len(x), *shape), dtype=torch.float32)
        for start, chunk in zip(range(0, len(x), 512), _array_batches(x, transform), strict=True):
            out[start : start + len(chunk)] = chunk
        return TensorSplit(out, y)
    return StreamSplit(_ArrayItems(x, y), None, transform, pre.train_transform(augment), workers, what)


def _nonempty(name: str, n_train: int, n_val: int) -> None:
    if n_train == 0 or n_val == 0:
        raise AutocompError(f"dataset {name!r} has an empty train or validation split")


def _num_classes(raw: Raw, name: str) -> int:
    """From the datasets' own label lists where they keep one, else one pass over their labels."""
    top = -1
    for ds in (raw.train, raw.val):
        labels = getattr(ds, "targets", None)
        if labels is None:
            try:
                labels = [int(ds[i][1]) for i in range(len(ds))]
            except Exception as exc:  # user datasets fail in many ways; name the dataset
                raise AutocompError(f"cannot read samples from dataset {name!r}: {exc}".splitlines()[0]) from None
        if len(labels):
            top = max(top, int(max(labels)))
    return top + 1


def _progress(it: Iterator[tuple], progress: Callable | None, what: str, total: int) -> Iterator[tuple]:
    task = progress(what, total) if progress else None
    for batch in it:
        if task:
            task.update(len(batch[0]))
        yield batch
    if task:
        task.close()


def bundle_from(train_data: object, val_data: object, workers: int | None = None) -> Data:
    """Wrap user data given to the Python API: ``(x, y)`` tensors (kept in memory, used as they are)
    or map-style datasets of ``(x, y)`` tensors (streamed through a DataLoader, used as they are)."""

    def tensors(data: object) -> tuple[torch.Tensor, torch.Tensor] | None:
        if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
            return data[0].float(), data[1].long()
        return None

    pairs = tensors(train_data), tensors(val_data)
    if all(p is not None for p in pairs):
        (train_x, train_y), (val_x, val_y) = pairs
        if len(train_x) != len(train_y) or len(val_x) != len(val_y):
            raise AutocompError("inputs and labels differ in length")
        _nonempty("python", len(train_x), len(val_x))
        num_classes = int(max(train_y.max(), val_y.max())) + 1
        channels = train_x.shape[1] if train_x.dim() == 4 else 1
        return DataBundle(train_x, train_y, val_x, val_y, num_classes, [0.0] * channels, [1.0] * channels,
                          Preprocess(normalization="none: inputs used as given"),
                          {"dataset": "python", "in_memory": True})
    for which, data in (("train", train_data), ("validation", val_data)):
        if not (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
            raise AutocompError(f"{which} data must be (x, y) tensors or a dataset of (x, y) pairs")
    _nonempty("python", len(train_data), len(val_data))
    pre = Preprocess(normalization="none: inputs used as given")
    w = default_workers() if workers is None else workers

    def split(ds: object, what: str) -> StreamSplit:
        return StreamSplit(ds, None, _as_tensor, _as_tensor, w, what)

    raw = Raw(train_data, val_data, "python", photo=False)
    scale = {"stored": "datasets given to the Python API", "multiply_by": None,
             "to_float": "a tensor sample: float32(value) as given; a PIL image: float32(uint8) * float32(1/255)"}
    return Data(split(train_data, "the training data"), split(val_data, "the validation data"),
                _num_classes(raw, "python"), pre, "none",
                {"dataset": "python", "in_memory": False, "split": GIVEN_SPLIT, "pixel_scale": scale})


def _as_tensor(x: object) -> torch.Tensor:
    """A tensor sample as it is (float); a PIL image as float in [0, 1]."""
    if isinstance(x, torch.Tensor):
        return x.float()
    from torchvision.transforms.v2 import functional as F

    return F.to_dtype(F.to_image(x), torch.float32, scale=True)
