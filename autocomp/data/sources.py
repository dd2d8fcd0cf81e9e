"""Where samples come from, before any preprocessing: the raw train and validation datasets.

Specs: ``digits`` (builtin, ships with scikit-learn: 1,797 8x8 digits, offline), a torchvision
dataset by name (``mnist``, ``fashionmnist``, ``cifar10``, ``torchvision:KMNIST`` ...) read
from ``data_dir``, an ImageFolder directory (with ``train/`` and ``val/`` inside, or split
80/20; listed and decoded by ``autocomp.data.folders``), or ``module:callable`` /
``path/file.py:callable`` returning ``(train_dataset, val_dataset)``.

Datasets whose pixels already sit in memory as arrays (digits, the MNIST family, CIFAR) expose
them as uint8/float tensors, so small ones skip per-sample decoding altogether. Image folders
are checked before anything is written: every file must decode (a JPEG at 1/8 scale, which
still reads all its data), once per set of files (cached under ``$AUTOCOMP_CACHE``).
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from autocomp._cache import cache_dir
from autocomp._user_code import load_callable
from autocomp.data.folders import DECODE, LISTING, ImageFiles, oriented_size, skipped_line
from autocomp.data.provenance import digest, digits_pixel_scale, listed, pixel_scale, sample_pixel_scale
from autocomp.errors import AutocompError

TORCHVISION_NAMES = {"mnist": "MNIST", "fashionmnist": "FashionMNIST", "kmnist": "KMNIST", "cifar10": "CIFAR10",
                     "cifar100": "CIFAR100", "svhn": "SVHN", "emnist": "EMNIST", "qmnist": "QMNIST"}
# Glyphs, not photos: a flipped or heavily cropped digit is another digit (or none).
NOT_PHOTOS = {"MNIST", "FashionMNIST", "KMNIST", "EMNIST", "QMNIST", "SVHN", "USPS", "Omniglot", "SEMEION"}


@dataclass
class Raw:
    """Raw splits: map-style datasets of ``(image, label)`` (PIL image or tensor), or tensors."""

    train: object
    val: object
    kind: str
    photo: bool  # photos get random-resized-crop + flip by default
    arrays: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # x (N,C,H,W), y
    image_sizes: set[tuple[int, int]] | None = None  # (width, height) of every image, for folders
    classes: int | None = None
    pixels: dict | None = None  # how a stored value becomes a float (provenance.pixel_scale)
    split: dict | None = None  # how train and validation were drawn, from which reader
    class_to_idx: dict[str, int] | None = None  # class name -> the label the model predicts
    decode: dict | None = None  # how a file becomes an 8-bit RGB image (image folders)
    skipped: str | None = None  # one line: files left out, by kind
    skipped_counts: dict[str, int] | None = None


def raw_datasets(name: str, data_dir: str | None, download: bool, progress=None) -> Raw:  # noqa: ANN001
    if name == "digits":
        return _digits()
    if ":" in name and not name.startswith("torchvision:"):
        pair = load_callable(name, what="dataset")()
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise AutocompError(f"dataset callable {name!r} must return (train_dataset, val_dataset)")
        for split, ds in zip(("train", "validation"), pair, strict=True):
            if not (hasattr(ds, "__getitem__") and hasattr(ds, "__len__")):
                raise AutocompError(f"dataset callable {name!r}: its {split} split is not a map-style dataset")
        split = {"method": "callable", "reader": f"{name}() -> (train_dataset, val_dataset)",
                 "validation": "every sample of val_dataset, in its order"}
        return Raw(pair[0], pair[1], "callable", photo=False, pixels=_first_sample_scale(pair[1], name), split=split)
    path = Path(name)
    if path.is_dir():
        return _image_folder(path, progress)
    if path.exists() or "/" in name:
        raise AutocompError(f"dataset {name!r} is not a directory")
    return _torchvision(name.removeprefix("torchvision:"), name, data_dir, download)


def _digits() -> Raw:
    from sklearn.datasets import load_digits  # deferred: sklearn import is slow

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    # A fixed 80/20 split (seed 0) so every run and the teacher cache see the same data.
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    cut = int(0.8 * len(x))
    arrays = (x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]])
    split = {"method": "seeded permutation", "reader": "sklearn.datasets.load_digits()", "seed": 0,
             "train_fraction": 0.8,
             "rule": f"order = torch.randperm({len(x)}, generator=torch.Generator().manual_seed(0)); "
                     f"train = order[:{cut}], validation = order[{cut}:]",
             "val_indices_are": "indices into load_digits().images/.target, in evaluation order",
             **listed("val_indices", order[cut:].tolist())}
    return Raw(None, None, "digits", photo=False, arrays=arrays, classes=10, pixels=digits_pixel_scale(), split=split,
               class_to_idx={str(d): d for d in range(10)})


def _torchvision(name: str, spec: str, data_dir: str | None, download: bool) -> Raw:
    import torchvision

    cls_name = TORCHVISION_NAMES.get(name.lower(), name)
    cls = getattr(torchvision.datasets, cls_name, None)
    if cls is None or not isinstance(cls, type):
        raise AutocompError(
            f"unknown dataset {spec!r}: use digits, a torchvision dataset name, an ImageFolder "
            "directory, or module:callable"
        )
    if data_dir is None:
        raise AutocompError(f"dataset {spec!r} needs --data-dir")
    root = str(data_dir)
    kwargs = {"split": "digits"} if cls_name == "EMNIST" else {}
    readers = [f"torchvision.datasets.{cls_name}(root, {a})" for a in (
        ("split='train'", "split='test'") if cls_name == "SVHN" else
        (f"train={t}" + "".join(f", {k}={v!r}" for k, v in kwargs.items()) for t in (True, False)))]
    split = {"method": "the dataset's own splits", "root": root, "reader": readers[1], "train_reader": readers[0],
             "validation": "every sample of the reader, in its order"}
    try:
        if cls_name == "SVHN":
            pair = (cls(root, split="train", download=download), cls(root, split="test", download=download))
        else:
            pair = (cls(root, train=True, download=download, **kwargs),
                    cls(root, train=False, download=download, **kwargs))
    except (RuntimeError, OSError) as exc:
        raise AutocompError(f"cannot read dataset {cls_name} from {root}: {str(exc).splitlines()[0]}") from None
    train, val = (_arrays(ds) for ds in pair)
    arrays = (*train, *val) if train and val else None
    pixels = pixel_scale(val[0].dtype, f"{cls_name}.data") if arrays else _first_sample_scale(pair[1], cls_name)
    mapping = getattr(pair[1], "class_to_idx", None)  # MNIST, CIFAR... keep one; SVHN does not
    return Raw(pair[0], pair[1], f"torchvision:{cls_name}", photo=cls_name not in NOT_PHOTOS, arrays=arrays,
               pixels=pixels, split=split, class_to_idx=dict(mapping) if isinstance(mapping, dict) else None)


def _first_sample_scale(dataset: object, name: str) -> dict:
    try:
        sample = dataset[0][0]
    except Exception as exc:  # user datasets fail in many ways; the first real read names it later
        return {"stored": f"{name}: first validation sample not read ({type(exc).__name__})", "multiply_by": None}
    return sample_pixel_scale(sample, f"samples of {name}")


def _arrays(dataset: object) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The dataset's pixels as an (N, C, H, W) tensor when it keeps them in memory (MNIST, CIFAR)."""
    data = getattr(dataset, "data", None)
    targets = getattr(dataset, "targets", getattr(dataset, "labels", None))
    if data is None or targets is None:
        return None
    x = torch.as_tensor(np.asarray(data)) if not isinstance(data, torch.Tensor) else data
    if x.dim() == 3:
        x = x.unsqueeze(1)
    elif x.dim() == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.permute(0, 3, 1, 2)  # NHWC (CIFAR) -> NCHW
    elif not (x.dim() == 4 and x.shape[1] in (1, 3)):
        return None
    return x.contiguous(), torch.as_tensor(np.asarray(targets), dtype=torch.long)


def _image_folder(path: Path, progress=None) -> Raw:  # noqa: ANN001
    seen: dict[str, str] = {}  # real path of every folder read, across train/ and val/
    guard = (os.path.realpath(path),)
    if (path / "train").is_dir() and (path / "val").is_dir():
        train = ImageFiles(path / "train", seen, guard)
        val = ImageFiles(path / "val", seen, guard)
        if train.classes != val.classes:
            only = [f"only in {name}/: {', '.join(sorted(set(a.classes) - set(b.classes)))}"
                    for name, a, b in (("train", train, val), ("val", val, train)) if set(a.classes) - set(b.classes)]
            raise AutocompError(f"dataset {path}: train/ and val/ have different class folders ({'; '.join(only)})")
        folders, files = (train, val), [p for p, _ in train.samples] + [p for p, _ in val.samples]
        split = {"method": "folders", "reader": "torchvision.datasets.ImageFolder(root / 'val', "
                 "loader=autocomp.data.folders.decode_image, is_valid_file=autocomp.data.folders.readable)",
                 "rule": "train/ and val/ as given", "classes": val.classes,
                 **_files("val_files", path, [p for p, _ in val.samples]),
                 "train_files_sha256": digest(_relative(path, [p for p, _ in train.samples]))}
    else:
        full = ImageFiles(path, seen)
        n_val = max(1, len(full) // 5)
        if len(full) < 2:
            raise AutocompError(f"dataset {path}: needs at least 2 images to split into train and validation")
        gen = torch.Generator().manual_seed(0)
        train, val = torch.utils.data.random_split(full, [len(full) - n_val, n_val], generator=gen)
        folders, files = (full,), [p for p, _ in full.samples]
        split = {"method": "random_split", "reader": "torchvision.datasets.ImageFolder(root, "
                 "loader=autocomp.data.folders.decode_image, is_valid_file=autocomp.data.folders.readable)",
                 "seed": 0, "rule": f"torch.utils.data.random_split(folder, [{len(full) - n_val}, {n_val}], "
                 "generator=torch.Generator().manual_seed(0)): validation = "
                 f"torch.randperm({len(full)}, generator)[{len(full) - n_val}:]",
                 "classes": full.classes,
                 "val_indices_are": "indices into ImageFolder(root).samples, in evaluation order",
                 **listed("val_indices", list(val.indices)),
                 **_files("val_files", path, [full.samples[i][0] for i in val.indices]),
                 "train_files_sha256": digest(_relative(path, [full.samples[i][0] for i in train.indices]))}
    classes = folders[-1].classes
    if len(classes) < 2:
        raise AutocompError(f"dataset {path}: 1 class folder ({classes[0]}): a classifier needs at least 2 classes, "
                            "one sub-folder of images each")
    skipped = sum((f.skipped for f in folders), Counter())
    sizes = check_images(files, progress)
    pixels = pixel_scale(torch.uint8, "image files decoded to 8-bit RGB by the rule in 'decode'")
    return Raw(train, val, "imagefolder", photo=True, image_sizes=sizes, classes=len(classes), pixels=pixels,
               split={**split, "listing": LISTING,
                      "order": "ImageFolder's: class folders sorted, files sorted within each",
                      "labels": "index in classes of the file's class folder (the first folder under the "
                                "folder the reader reads)"},
               class_to_idx=dict(folders[-1].class_to_idx), decode=dict(DECODE),
               skipped=skipped_line(path, skipped), skipped_counts=dict(skipped))


def _relative(root: Path, files: list[str]) -> list[str]:
    return [Path(f).relative_to(root).as_posix() for f in files]


def _files(name: str, root: Path, files: list[str]) -> dict:
    """Validation files relative to the dataset folder, listed (and digested) in evaluation order."""
    return {f"{name}_are": "paths relative to the dataset folder, in evaluation order",
            **listed(name, _relative(root, files))}


def check_images(files: list[str], progress=None) -> set[tuple[int, int]]:  # noqa: ANN001
    """Decode every image once (JPEGs at 1/8 scale); return the set of sizes. One line on the first bad file.

    Verified sets are remembered by a digest of their paths, sizes and modification times.
    """
    from PIL import Image


    h = hashlib.sha256(b"sizes as decoded, EXIF-oriented\n")  # markers of the unoriented sizes are not reused
    for f in files:
        st = os.stat(f)
        h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    marker = cache_dir() / "verified-images" / h.hexdigest()[:32]
    if marker.is_file():
        return {tuple(int(v) for v in line.split("x")) for line in marker.read_text().split()}

    def decode(f: str) -> tuple[int, int]:
        try:
            with Image.open(f) as im:
                size = oriented_size(im)
                im.draft("RGB", (max(1, im.size[0] // 8), max(1, im.size[1] // 8)))
                im.load()
            return size
        except Exception as exc:  # PIL raises many types for bad files
            raise AutocompError(f"cannot decode image {f}: {type(exc).__name__}: {exc}".splitlines()[0]) from None

    task = progress("checking images", len(files)) if progress else None
    sizes: set[tuple[int, int]] = set()
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for start in range(0, len(files), 4096):  # bounded: a million futures at once would not be
            chunk = files[start : start + 4096]
            sizes.update(pool.map(decode, chunk))
            if task:
                task.update(len(chunk))
    if task:
        task.close()
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("\n".join(f"{w}x{h}" for w, h in sorted(sizes)))
    return sizes
