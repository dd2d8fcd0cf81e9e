"""Tiny image folders for the data tests: mixed sizes and formats, a class readable from colour."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40)]


def make_image_folder(root: Path, per_class: int = 12, classes: int = 3, sizes: tuple[int, int] = (10, 40),
                      split: bool = True, val_per_class: int = 4, seed: int = 0) -> Path:
    """``root/train/<c>/*.png|jpg`` and ``root/val/...`` (or one folder when ``split`` is False).

    Each image: a noisy background with a centred square in its class's colour; width and height
    drawn independently from ``sizes``, half PNG and half JPEG.
    """
    rng = np.random.default_rng(seed)
    splits = {"train": per_class, "val": val_per_class} if split else {"": per_class}
    for name, n in splits.items():
        for c in range(classes):
            folder = root / name / f"class_{c}" if name else root / f"class_{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                w, h = (int(v) for v in rng.integers(sizes[0], sizes[1] + 1, size=2))
                img = rng.integers(90, 160, size=(h, w, 3)).astype(np.uint8)
                s = max(2, min(w, h) // 2)
                y0, x0 = (h - s) // 2, (w - s) // 2
                img[y0 : y0 + s, x0 : x0 + s] = COLOURS[c % len(COLOURS)]
                ext = "png" if i % 2 else "jpg"
                Image.fromarray(img).save(folder / f"{i:04d}.{ext}")
    return root


def pattern(w: int, h: int, seed: int = 0) -> np.ndarray:
    """An (h, w, 3) uint8 image with no symmetry, so a wrong rotation or flip shows."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(h, w, 3)).astype(np.uint8)


def save_with_orientation(upright: np.ndarray, path: Path, orientation: int) -> None:
    """Store ``upright`` turned so that EXIF ``orientation`` (3, 6 or 8) turns it back on display."""
    stored = {3: np.rot90(upright, 2), 6: np.rot90(upright, 1), 8: np.rot90(upright, -1)}[orientation]
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(np.ascontiguousarray(stored)).save(path, exif=exif.tobytes())


def save_sixteen_bit(gray: np.ndarray, path: Path) -> None:
    """``gray`` (uint8, h x w) as a 16-bit grayscale PNG (mode I;16), each value p stored as p * 257."""
    Image.fromarray(gray.astype(np.uint16) * 257).save(path)
