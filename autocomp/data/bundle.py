"""``Data``: a train and a validation split plus how their samples were preprocessed.

Everything downstream (teacher training, the fine-tune, calibration, every accuracy) asks it
for batches. ``DataBundle`` is the in-memory kind built from four tensors.

Example::

    data = DataBundle(train_x, train_y, val_x, val_y, num_classes=10, mean=[0.0], std=[1.0])
    for x, y in data.eval_batches(256):
        ...
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from autocomp.data.preprocess import Preprocess
from autocomp.data.provenance import GIVEN_SPLIT, pixel_scale
from autocomp.data.splits import Batch, EvalSet, StreamSplit, TensorSplit, seeded_subset


class Data:
    def __init__(self, train: TensorSplit | StreamSplit, val: TensorSplit | StreamSplit, num_classes: int,
                 preprocess: Preprocess, augment: str = "none", notes: dict | None = None) -> None:
        self.train, self.val, self.num_classes = train, val, num_classes
        self.preprocess, self.augment = preprocess, augment
        self.notes = dict(notes or {})  # provenance recorded beside the transform (sizes of the splits...)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.train.sample_shape

    @property
    def n_train(self) -> int:
        return len(self.train)

    @property
    def n_val(self) -> int:
        return len(self.val)

    @property
    def mean(self) -> list[float]:
        return list(self.preprocess.mean) if self.preprocess.mean is not None else [0.0] * self.input_shape[0]

    @property
    def std(self) -> list[float]:
        return list(self.preprocess.std) if self.preprocess.std is not None else [1.0] * self.input_shape[0]

    @property
    def caches_teacher_logits(self) -> bool:
        """Teacher logits for the whole train split are kept only for small in-memory, unaugmented data."""
        return self.train.in_memory and self.augment == "none"

    @property
    def preprocessing(self) -> dict:
        """The record written on the study and into every artifact card."""
        return {**self.preprocess.describe(self.augment, self.notes.get("pixel_scale")),
                "input_shape": list(self.input_shape),
                "train_images": self.n_train, "val_images": self.n_val, **self.notes}

    def example(self, n: int = 1) -> torch.Tensor:
        """The first ``n`` training samples, eval-preprocessed (export traces the model on these)."""
        return self.train.head(n)

    def train_batches(self, batch_size: int, seed: int, pin: bool = False) -> Iterator[tuple]:
        """Endless ``(x, y, indices or None)`` training batches in a seeded order, augmented."""
        return self.train.train_batches(batch_size, seed, pin)

    def eval_batches(self, batch_size: int = 256, limit: int | None = None, pin: bool = False) -> Iterator[Batch]:
        """Validation batches in a fixed order (the first ``limit`` samples)."""
        return self.val.eval_batches(batch_size, limit, pin)

    def eval_set(self, limit: int | None = None) -> EvalSet:
        return EvalSet(self.val, limit)

    def val_subset(self, k: int | None, seed: int) -> EvalSet:
        """The seeded subset of ``k`` validation samples ``--val-samples k`` would have kept."""
        idx = seeded_subset(self.n_val, k, seed)
        return self.eval_set() if idx is None else EvalSet(self.val.subset(idx))

    def calibration(self, n_batches: int = 4, batch: int = 32, budget: int = 16 << 20) -> list[np.ndarray]:
        """A few fixed, eval-preprocessed training batches for static int8 activation calibration:
        ``n_batches x batch`` samples, fewer when they would exceed ``budget`` bytes of input.

        ONNX Runtime's calibrator keeps every intermediate output of every calibration batch: 128
        images of 224 px in batches of 32 took MobileNetV3-Large's int8 export to 4.1 GB; 27 in
        batches of 8, to 2.2 GB. The budget keeps 4 x 32 samples up to 3x96x96.
        """
        per = 4 * int(np.prod(self.input_shape))
        n = max(8, min(n_batches * batch, budget // per))
        return [x.numpy() for x, _ in self.train.eval_batches(min(batch, max(8, n // n_batches)), n)]


class DataBundle(Data):
    """Data held as tensors in memory (the fast path, and what the Python API's tensors become)."""

    def __init__(self, train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
                 num_classes: int, mean: list[float], std: list[float], preprocess: Preprocess | None = None,
                 notes: dict | None = None) -> None:
        if preprocess is None:
            preprocess = Preprocess(mean=tuple(mean), std=tuple(std), normalization="inputs given already normalized")
        # Tensors handed over are the model's inputs as they are: nothing to split, nothing to scale.
        given = {"split": GIVEN_SPLIT, "pixel_scale": pixel_scale(torch.float32, "tensors given, used as float")}
        super().__init__(TensorSplit(train_x, train_y), TensorSplit(val_x, val_y), num_classes, preprocess, "none",
                         {**given, **(notes or {})})
        self.train_x, self.train_y, self.val_x, self.val_y = train_x, train_y, val_x, val_y

