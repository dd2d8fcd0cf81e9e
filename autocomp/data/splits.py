"""Train and validation splits as the rest of autocomp sees them: batches, never whole arrays.

- ``TensorSplit``: preprocessed float tensors in memory, the fast path for small datasets (the
  builtin digits, MNIST at 28 px, the Python API's tensors). Batches are index slices.
- ``StreamSplit``: a map-style dataset of raw samples plus a transform, read through a
  ``DataLoader`` with worker processes (pinned memory for a GPU). Memory holds the batches in
  flight, whatever the dataset's size.

Training batches come in a seeded order, and each streamed sample's augmentation is seeded by
``(seed, epoch, index)``: the same seed gives the same batches with any number of workers.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import numpy as np
import torch

from autocomp.errors import AutocompError

Batch = tuple[torch.Tensor, torch.Tensor]


class TensorSplit:
    """Preprocessed samples held as one float tensor (small datasets only)."""

    in_memory = True

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def head(self, n: int) -> torch.Tensor:
        return self.x[:n]

    def subset(self, idx: list[int]) -> TensorSplit:
        return TensorSplit(self.x[idx], self.y[idx])

    def labels(self) -> np.ndarray | None:
        return self.y.numpy()

    def eval_batches(self, batch_size: int = 256, limit: int | None = None, pin: bool = False) -> Iterator[Batch]:
        n = len(self.x) if limit is None else min(limit, len(self.x))
        for start in range(0, n, batch_size):
            end = min(n, start + batch_size)
            yield self.x[start:end], self.y[start:end]

    def train_batches(self, batch_size: int, seed: int, pin: bool = False
                      ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Endless seeded batches ``(x, y, indices)``; a reshuffle drops an epoch's partial tail."""
        gen = torch.Generator().manual_seed(seed)
        order, cursor = torch.randperm(len(self.x), generator=gen), 0
        while True:
            if cursor + batch_size > len(order):
                order, cursor = torch.randperm(len(self.x), generator=gen), 0
            idx = order[cursor : cursor + batch_size]
            cursor += batch_size
            yield self.x[idx], self.y[idx], idx


class _Items(torch.utils.data.Dataset):
    """``dataset[indices[i]]`` through ``transform``; keys are ``i`` or ``(sample_seed, i)``."""

    def __init__(self, dataset: object, indices: list[int] | None, transform: Callable, what: str) -> None:
        self.dataset, self.indices, self.transform, self.what = dataset, indices, transform, what

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        seed, i = key if isinstance(key, tuple) else (None, key)
        j = self.indices[i] if self.indices is not None else i
        try:
            image, label = self.dataset[j]
            if seed is None:
                x = self.transform(image)
            else:
                # Seed this sample's augmentation by (seed, epoch, index), not by which worker
                # drew it; only the CPU generator, so a GPU's random state is left alone.
                with torch.random.fork_rng(devices=[]):
                    torch.default_generator.manual_seed(seed)
                    x = self.transform(image)
        except AutocompError:
            raise
        except Exception as exc:  # decoders and user datasets raise many types
            where = getattr(self.dataset, "samples", None)
            name = where[j][0] if where is not None else f"sample {j}"
            raise AutocompError(f"cannot read {name} of {self.what}: {type(exc).__name__}: {exc}".splitlines()[0]
                                ) from None
        return x.as_subclass(torch.Tensor), int(label)


class _Epochs(torch.utils.data.Sampler):
    """Endless ``(sample_seed, index)`` keys, a fresh seeded permutation per epoch."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for epoch in itertools.count():
            gen = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % 2**63)
            base = (self.seed * 2_654_435_761 + epoch * 40_503) * 1_000_003
            for i in torch.randperm(self.n, generator=gen).tolist():
                yield (base + i) % 2**63, i


class StreamSplit:
    """Raw samples read and transformed on the fly by DataLoader workers."""

    in_memory = False

    def __init__(self, dataset: object, indices: list[int] | None, eval_transform: Callable,
                 train_transform: Callable, workers: int, what: str) -> None:
        self.dataset, self.indices, self.what, self.workers = dataset, indices, what, workers
        self.eval_transform, self.train_transform = eval_transform, train_transform
        self._shape: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else len(self.dataset)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        if self._shape is None:
            self._shape = tuple(self.head(1).shape[1:])
        return self._shape

    def subset(self, idx: list[int]) -> StreamSplit:
        mine = self.indices if self.indices is not None else range(len(self.dataset))
        return StreamSplit(self.dataset, [mine[i] for i in idx], self.eval_transform, self.train_transform,
                           self.workers, self.what)

    def labels(self) -> np.ndarray | None:
        """Class indices without decoding an image (ImageFolder and torchvision datasets keep
        ``targets``), or None when the dataset does not say."""
        targets = getattr(self.dataset, "targets", None)
        if targets is None or len(targets) != len(self.dataset):
            return None
        y = np.asarray(targets).reshape(-1)
        return y if self.indices is None else y[np.asarray(self.indices, dtype=np.int64)]

    def head(self, n: int) -> torch.Tensor:
        items = _Items(self.dataset, self.indices, self.eval_transform, self.what)
        return torch.stack([items[i][0] for i in range(min(n, len(items)))])

    def _loader(self, items: _Items, batch_size: int, pin: bool,
                batch_sampler: torch.utils.data.Sampler | None = None) -> torch.utils.data.DataLoader:
        # No more workers than batches: each one forks the process.
        workers = min(self.workers, max(1, -(-len(items) // batch_size))) if self.workers else 0
        sized = {"batch_sampler": batch_sampler} if batch_sampler is not None else {"batch_size": batch_size}
        return torch.utils.data.DataLoader(items, num_workers=workers, pin_memory=pin,
                                           prefetch_factor=2 if workers else None,
                                           **sized)

    def eval_batches(self, batch_size: int = 256, limit: int | None = None, pin: bool = False) -> Iterator[Batch]:
        indices = self.indices if self.indices is not None else list(range(len(self.dataset)))
        items = _Items(self.dataset, indices[:limit] if limit is not None else indices, self.eval_transform, self.what)
        yield from _checked(self._loader(items, batch_size, pin), self.what)

    def train_batches(self, batch_size: int, seed: int, pin: bool = False
                      ) -> Iterator[tuple[torch.Tensor, torch.Tensor, None]]:
        items = _Items(self.dataset, self.indices, self.train_transform, self.what)
        sampler = torch.utils.data.BatchSampler(_Epochs(len(items), seed), batch_size, drop_last=False)
        for x, y in _checked(self._loader(items, batch_size, pin, sampler), self.what):
            yield x, y, None


def _checked(loader: torch.utils.data.DataLoader, what: str) -> Iterator[Batch]:
    """Iterate a loader; a worker's failure becomes one line naming the sample, not a traceback."""
    it = iter(loader)
    try:
        while True:
            try:
                batch = next(it)
            except StopIteration:
                return
            except AutocompError as exc:  # re-raised from a worker with its traceback appended
                lines = [s for s in str(exc).splitlines() if s.strip()]
                raise AutocompError(lines[-1].removeprefix("autocomp.errors.AutocompError: ")) from None
            except RuntimeError as exc:
                if "stack expects each tensor to be equal size" in str(exc):
                    raise AutocompError(f"samples of {what} have different sizes: pass --image-size (and --resize)"
                                        ) from None
                raise
            yield batch
    finally:
        del it  # shuts the workers down as soon as the caller stops


def seeded_subset(n: int, k: int | None, seed: int) -> list[int] | None:
    """The ``k`` of ``n`` indices that ``--train-samples``/``--val-samples k`` keep (None: all)."""
    if k is None or k >= n:
        return None
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k].tolist()


def eval_batch_size(sample_shape: tuple[int, ...], budget: int = 8 << 20) -> int:
    """Batches of about ``budget`` bytes (8 to 256 samples): 256 at 28 px, 13 at 3x224x224.

    ONNX Runtime's arena keeps what the largest batch needed: 53 images of 224 px held ~0.5 GB
    for ResNet-18, and batches above ~8 evaluate no faster on a CPU.
    """
    per = 4 * int(np.prod(sample_shape))
    return max(8, min(256, budget // max(1, per)))


class EvalSet:
    """Validation batches as numpy, for an artifact's session; ``shape`` is ``(N, C, H, W)``.

    ``autocomp.measure`` takes it where it takes a validation array. ``progress(done, total)``,
    when set, hears about every batch (the runner's progress line).
    """

    def __init__(self, split: TensorSplit | StreamSplit, limit: int | None = None, batch_size: int | None = None
                 ) -> None:
        self.split = split
        self.n = len(split) if limit is None else min(limit, len(split))
        self.shape = (self.n, *split.sample_shape)
        self.batch_size = batch_size or eval_batch_size(self.shape[1:])
        self.progress: Callable[[int, int], None] | None = None

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        done = 0
        for x, y in self.split.eval_batches(self.batch_size, self.n):
            done += len(x)
            if self.progress is not None:
                self.progress(done, self.n)
            yield x.numpy(), y.numpy()
