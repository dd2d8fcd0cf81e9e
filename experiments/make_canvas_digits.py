"""Build an ImageFolder of mixed-size JPEG photos-of-digits, offline, from MNIST.

Each MNIST digit is drawn in a random colour on a canvas of random width and height (48-400 px
each, so aspect ratios up to 8:1), on a random background gradient, saved as JPEG. The digit
sits inside the centred square a ``resize 256 + center crop 224`` eval transform keeps, so the
task stays a digit task at 224 px. Nothing is committed: write it under ``runs/`` or ``/tmp``.

    python experiments/make_canvas_digits.py --out runs/canvas20k --train 20000 --val 2000
    python experiments/make_canvas_digits.py --out runs/canvas2k --link-from runs/canvas20k --train 2000

``--link-from`` makes a smaller copy of an existing set with hard links (the first N/10 images
of each class, the same ``val/``), so two sizes differ only in the number of training images.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from PIL import Image

MNIST = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def draw(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    w, h = (int(v) for v in rng.integers(48, 401, size=2))
    short = min(w, h)
    top, bottom = rng.integers(0, 256, size=(2, 3))
    ramp = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    canvas = (top * (1 - ramp) + bottom * ramp) * np.ones((1, w, 1), np.float32)
    side = int(short * rng.uniform(0.45, 0.75))
    glyph = np.asarray(Image.fromarray(digit).resize((side, side), Image.BILINEAR), np.float32)[..., None] / 255.0
    colour = np.where(canvas[h // 2, w // 2] > 127, rng.integers(0, 90, 3), rng.integers(170, 256, 3))
    window = 0.875 * short  # what resize(short side) + center crop(0.875) keeps, in canvas pixels
    cx = w / 2 + rng.uniform(-1, 1) * max(0.0, (window - side) / 2)
    cy = h / 2 + rng.uniform(-1, 1) * max(0.0, (window - side) / 2)
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    x0, y0 = min(max(0, x0), w - side), min(max(0, y0), h - side)
    patch = canvas[y0 : y0 + side, x0 : x0 + side]
    canvas[y0 : y0 + side, x0 : x0 + side] = patch * (1 - glyph) + colour * glyph
    return Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))


def build(out: Path, n_train: int, n_val: int, seed: int) -> None:
    import torchvision

    rng = np.random.default_rng(seed)
    for split, train, n in (("train", True, n_train), ("val", False, n_val)):
        ds = torchvision.datasets.MNIST(str(MNIST), train=train, download=False)
        images, labels = ds.data.numpy(), ds.targets.numpy()
        for c in range(10):
            (out / split / str(c)).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = draw(images[i], rng)
            img.save(out / split / str(labels[i]) / f"{i:06d}.jpg", quality=int(rng.integers(80, 96)))
        print(f"{split}: {n} images in {out / split}")


def link(src: Path, out: Path, n_train: int) -> None:
    for split in ("train", "val"):
        for cls in sorted(p for p in (src / split).iterdir() if p.is_dir()):
            files = sorted(cls.iterdir())
            if split == "train":
                files = files[: n_train // 10]
            (out / split / cls.name).mkdir(parents=True, exist_ok=True)
            for f in files:
                target = out / split / cls.name / f.name
                if not target.exists():
                    os.link(f, target)
    print(f"linked {out} from {src}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--train", type=int, default=20000)
    p.add_argument("--val", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--link-from", default=None)
    args = p.parse_args()
    if args.link_from:
        link(Path(args.link_from), Path(args.out), args.train)
    else:
        build(Path(args.out), args.train, args.val, args.seed)


if __name__ == "__main__":
    main()
