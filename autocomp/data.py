"""Datasets, materialized once as tensors so trials slice them without a loader.

Specs: ``digits`` (builtin, ships with scikit-learn: 1,797 8x8 digits, offline), a torchvision
dataset by name (``mnist``, ``fashionmnist``, ``cifar10``, ``torchvision:KMNIST`` ...) read
from ``data_dir``, an ImageFolder directory (with ``train/`` and ``val/`` inside, or split),
or ``module:callable`` / ``path/file.py:callable`` returning ``(train_dataset, val_dataset)``.

Inputs are standardized with the training split's per-channel mean and std; the artifact
expects inputs standardized the same way (both are recorded on the study).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from autocomp.errors import AutocompError
from autocomp.loading import load_callable

TORCHVISION_NAMES = {"mnist": "MNIST", "fashionmnist": "FashionMNIST", "kmnist": "KMNIST", "cifar10": "CIFAR10",
                     "cifar100": "CIFAR100", "svhn": "SVHN", "emnist": "EMNIST", "qmnist": "QMNIST"}


@dataclass
class DataBundle:
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    num_classes: int
    mean: list[float]
    std: list[float]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])


@dataclass(frozen=True)
class DataSpec:
    name: str = "digits"
    data_dir: str | None = None
    image_size: int | None = None
    channels: int | None = None  # convert to this many channels (1 <-> 3)
    train_samples: int | None = None  # keep the first N (after a seeded shuffle)
    val_samples: int | None = None
    download: bool = False


def load_data(spec: DataSpec, seed: int = 0) -> DataBundle:
    if spec.name == "digits":
        train_x, train_y, val_x, val_y = _digits(seed)
    else:
        train_ds, val_ds = _datasets(spec)
        train_x, train_y = _materialize(train_ds, spec.name)
        val_x, val_y = _materialize(val_ds, spec.name)
    train_x, train_y = _subset(train_x, train_y, spec.train_samples, seed)  # before resizing: cheaper
    val_x, val_y = _subset(val_x, val_y, spec.val_samples, seed)
    train_x, val_x = _resize(train_x, spec), _resize(val_x, spec)
    if len(train_x) == 0 or len(val_x) == 0:
        raise AutocompError(f"dataset {spec.name!r} has an empty train or validation split")
    dims = [0, 2, 3] if train_x.dim() == 4 else [0]
    mean = train_x.mean(dim=dims, keepdim=True)[0]
    std = train_x.std(dim=dims, keepdim=True)[0].clamp_min(1e-6)
    num_classes = int(max(train_y.max(), val_y.max())) + 1
    return DataBundle(
        (train_x - mean) / std, train_y, (val_x - mean) / std, val_y, num_classes,
        mean.flatten().tolist(), std.flatten().tolist(),
    )


def _digits(seed: int) -> tuple[torch.Tensor, ...]:
    from sklearn.datasets import load_digits  # deferred: sklearn import is slow

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    # A fixed 80/20 split (seed 0) so every run and the teacher cache see the same data.
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    cut = int(0.8 * len(x))
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


def _datasets(spec: DataSpec) -> tuple[object, object]:
    import torchvision
    from torchvision import transforms

    to_tensor = transforms.ToTensor()
    name = spec.name.removeprefix("torchvision:")
    if ":" in spec.name and not spec.name.startswith("torchvision:"):
        pair = load_callable(spec.name, what="dataset")()
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise AutocompError(f"dataset callable {spec.name!r} must return (train_dataset, val_dataset)")
        return pair
    path = Path(spec.name)
    if path.is_dir():
        if (path / "train").is_dir() and (path / "val").is_dir():
            return (torchvision.datasets.ImageFolder(str(path / "train"), to_tensor),
                    torchvision.datasets.ImageFolder(str(path / "val"), to_tensor))
        full = torchvision.datasets.ImageFolder(str(path), to_tensor)
        n_val = max(1, len(full) // 5)
        gen = torch.Generator().manual_seed(0)
        return tuple(torch.utils.data.random_split(full, [len(full) - n_val, n_val], generator=gen))
    cls_name = TORCHVISION_NAMES.get(name.lower(), name)
    cls = getattr(torchvision.datasets, cls_name, None)
    if cls is None or not isinstance(cls, type):
        raise AutocompError(
            f"unknown dataset {spec.name!r}: use digits, a torchvision dataset name, an ImageFolder "
            "directory, or module:callable"
        )
    if spec.data_dir is None:
        raise AutocompError(f"dataset {spec.name!r} needs --data-dir")
    root = str(spec.data_dir)
    try:
        if cls_name == "SVHN":
            return (cls(root, split="train", transform=to_tensor, download=spec.download),
                    cls(root, split="test", transform=to_tensor, download=spec.download))
        kwargs = {"split": "digits"} if cls_name == "EMNIST" else {}
        return (cls(root, train=True, transform=to_tensor, download=spec.download, **kwargs),
                cls(root, train=False, transform=to_tensor, download=spec.download, **kwargs))
    except (RuntimeError, OSError) as exc:
        raise AutocompError(f"cannot read dataset {cls_name} from {root}: {str(exc).splitlines()[0]}") from None


def _materialize(dataset: object, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    data = getattr(dataset, "data", None)
    targets = getattr(dataset, "targets", None)
    # Fast path for the MNIST family: uint8 tensors already in memory.
    if isinstance(data, torch.Tensor) and data.dim() == 3 and targets is not None:
        return data.unsqueeze(1).float() / 255.0, torch.as_tensor(targets, dtype=torch.long)
    loader = torch.utils.data.DataLoader(dataset, batch_size=512, shuffle=False)
    xs, ys = [], []
    try:
        for x, y in loader:
            xs.append(x)
            ys.append(torch.as_tensor(y))
    except Exception as exc:  # user datasets fail in many ways; name the dataset
        raise AutocompError(f"cannot read samples from dataset {name!r}: {exc}".splitlines()[0]) from None
    if not xs:
        raise AutocompError(f"dataset {name!r} is empty")
    return torch.cat(xs).float(), torch.cat(ys).long()


def _resize(x: torch.Tensor, spec: DataSpec) -> torch.Tensor:
    if spec.channels and x.shape[1] != spec.channels:
        if spec.channels == 3 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1).contiguous()
        elif spec.channels == 1:
            x = x.mean(dim=1, keepdim=True)
        else:
            raise AutocompError(f"cannot convert {x.shape[1]}-channel images to {spec.channels} channels")
    if spec.image_size and tuple(x.shape[-2:]) != (spec.image_size, spec.image_size):
        x = torch.nn.functional.interpolate(x, size=(spec.image_size,) * 2, mode="bilinear", align_corners=False)
    return x


def _subset(x: torch.Tensor, y: torch.Tensor, n: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if n is None or n >= len(x):
        return x, y
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]
    return x[idx], y[idx]


def calibration_batches(bundle: DataBundle, n_batches: int = 4, batch: int = 32) -> list[np.ndarray]:
    """A few fixed training batches for static int8 activation calibration."""
    n = min(n_batches, -(-len(bundle.train_x) // batch))
    return [bundle.train_x[i * batch : (i + 1) * batch].numpy() for i in range(n)]


def bundle_from(train_data: object, val_data: object) -> DataBundle:
    """Wrap user data given to the Python API: ``(x, y)`` tensors or datasets, used as they are."""

    def tensors(data: object, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
            return data[0].float(), data[1].long()
        if hasattr(data, "__getitem__") and hasattr(data, "__len__"):
            return _materialize(data, which)
        raise AutocompError(f"{which} data must be (x, y) tensors or a dataset of (x, y) pairs")

    train_x, train_y = tensors(train_data, "train")
    val_x, val_y = tensors(val_data, "validation")
    if len(train_x) != len(train_y) or len(val_x) != len(val_y):
        raise AutocompError("inputs and labels differ in length")
    num_classes = int(max(train_y.max(), val_y.max())) + 1
    channels = train_x.shape[1] if train_x.dim() == 4 else 1
    return DataBundle(train_x, train_y, val_x, val_y, num_classes, [0.0] * channels, [1.0] * channels)
