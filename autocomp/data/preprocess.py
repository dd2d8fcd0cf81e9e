"""Preprocessing matched to the model, recorded so a device can reproduce it.

Eval transform: (channels) -> resize the shorter side -> center crop -> float in [0, 1] ->
normalize. Resizing and cropping run on PIL images as PIL images (torchvision's own
``weights.transforms()`` does the same), so a user's plain torchvision evaluation sees the same
pixels. Training transform (``augment``): ``none`` is the eval transform; ``light`` a
random-resized crop of 35-100 % of the area plus a horizontal flip; ``standard`` torchvision's
reference recipe, a random-resized crop of 8-100 % plus a flip.

Example::

    pre = Preprocess(image_size=224, resize=256, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    x = pre.eval_transform()(pil_image)  # (3, 224, 224) float32
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import torch
from torchvision.transforms import v2

AUGMENTS = ("none", "light", "standard")
_CROP_SCALE = {"light": (0.35, 1.0), "standard": (0.08, 1.0)}


@dataclass(frozen=True)
class Preprocess:
    """Everything between a stored image and the model's input tensor."""

    image_size: int | None = None  # center crop (eval) / random-resized crop (train) to this square
    resize: int | None = None  # resize the shorter side to this first (eval)
    mean: tuple[float, ...] | None = None  # None: inputs are not normalized
    std: tuple[float, ...] | None = None
    channels: int | None = None  # convert to 1 or 3 channels
    interpolation: str = "bilinear"
    normalization: str = "none"  # where mean/std came from, in words

    def _geometry(self) -> list[Callable]:
        steps: list[Callable] = []
        if self.channels == 3:
            steps.append(v2.RGB())
        elif self.channels == 1:
            steps.append(v2.Grayscale(1))
        return steps

    def _to_float(self) -> list[Callable]:
        steps: list[Callable] = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
        if self.mean is not None:
            steps.append(v2.Normalize(list(self.mean), list(self.std)))
        return steps

    def eval_transform(self, normalize: bool = True) -> v2.Compose:
        """The deterministic transform every evaluation, calibration and example uses."""
        steps = self._geometry()
        if self.resize:
            steps.append(v2.Resize(self.resize, interpolation=self.interpolation, antialias=True))
        if self.image_size:
            steps.append(v2.CenterCrop(self.image_size))
        pre = self if normalize else replace(self, mean=None, std=None)
        return v2.Compose(steps + pre._to_float())

    def train_transform(self, augment: str) -> v2.Compose:
        """``augment`` = none | light | standard (see the module docstring)."""
        if augment == "none":
            return self.eval_transform()
        if not self.image_size:
            raise ValueError("augmentation needs an image size")
        steps = self._geometry() + [
            v2.RandomResizedCrop(self.image_size, scale=_CROP_SCALE[augment], interpolation=self.interpolation,
                                 antialias=True),
            v2.RandomHorizontalFlip(),
        ]
        return v2.Compose(steps + self._to_float())

    def describe(self, augment: str = "none", pixel_scale: dict | None = None) -> dict:
        """What the study and the artifact card record: enough to rebuild the transform anywhere.

        ``pixel_scale`` (``autocomp.data.provenance``): how the source's stored values become
        floats; without it the step reads as torchvision's rule for any input."""
        eval_steps = []
        if self.channels:
            eval_steps.append(f"convert to {self.channels} channel(s)")
        if self.resize:  # torchvision's own size and anchor rules, spelled out for a device
            eval_steps.append(f"resize shorter side to {self.resize}, longer to int({self.resize} * long / short) "
                              f"({self.interpolation}, antialias; a PIL image by PIL's resize)")
        if self.image_size:
            eval_steps.append(f"center crop {self.image_size}x{self.image_size} at top = round((h - "
                              f"{self.image_size}) / 2), left = round((w - {self.image_size}) / 2)")
        to_float = (pixel_scale or {}).get("to_float") or \
            "to float32: uint8 x float32(1/255), float as given (torchvision ToDtype(float32, scale=True))"
        eval_steps.append(f"to float32: {to_float}" if pixel_scale else to_float)
        if self.mean is not None:
            eval_steps.append("subtract mean, divide by std, per channel")
        train = "the eval transform" if augment == "none" else (
            f"random-resized crop {self.image_size} (area {_CROP_SCALE[augment][0]:g}-1, ratio 3/4-4/3), "
            "horizontal flip p=0.5, then float and normalize as eval")
        return {
            "resize": self.resize, "crop": self.image_size, "channels": self.channels,
            "interpolation": self.interpolation, "antialias": True,
            "mean": list(self.mean) if self.mean is not None else None,
            "std": list(self.std) if self.std is not None else None,
            "normalization": self.normalization,
            "eval_transform": " -> ".join(eval_steps),
            "augment": augment, "train_transform": train,
        }


def channel_stats(batches: Iterable[torch.Tensor]) -> tuple[tuple[float, ...], tuple[float, ...], int]:
    """Per-channel mean and std over every pixel of ``(N, C, H, W)`` batches (float64 sums)."""
    total = total_sq = None
    count = images = 0
    for x in batches:
        x = x.double()
        s, sq = x.sum(dim=(0, 2, 3)), (x * x).sum(dim=(0, 2, 3))
        total, total_sq = (s, sq) if total is None else (total + s, total_sq + sq)
        count += x.shape[0] * x.shape[2] * x.shape[3]
        images += x.shape[0]
    if total is None:
        raise ValueError("no images to compute statistics from")
    mean = total / count
    var = (total_sq / count - mean * mean) * count / max(1, count - 1)
    std = var.clamp_min(1e-12).sqrt().clamp_min(1e-6)
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std), images
