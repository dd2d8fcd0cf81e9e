"""Image folders read as they are: one listing rule, one decode rule, both recorded.

Listing (``ImageFiles``): torchvision ``ImageFolder``'s order and labels (class folders sorted,
files sorted within each folder, walked with symlinks followed), with three differences that
make it safe on real folders:

- a folder is entered at most once: a symlinked folder is followed unless it leads back to a
  folder already read or to one that holds the dataset (a loop); then the dataset is refused in
  one line naming both paths, never read twice or forever;
- a symlink that does not resolve (broken, or pointing at itself) is refused in one line;
- files autocomp does not read (other extensions, hidden files, files beside the class folders)
  are counted and named by kind in one line (``skipped_line``), never dropped without a word.

For every folder it accepts, ``ImageFolder(root, loader=decode_image, is_valid_file=readable)``
lists the same samples in the same order.

Decode (``decode_image``, the rule in ``DECODE``): the first frame (GIF, APNG, multi-page TIFF)
-> EXIF orientation applied -> 16-bit values to 8 bits by ``v >> 8`` (the high byte, so
``p * 257`` and ``p * 256`` both give back ``p``) -> transparency composited over white -> RGB.
"""

from __future__ import annotations

import errno
import os
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from autocomp.errors import AutocompError

# torchvision's IMG_EXTENSIONS plus GIF, read as its first frame.
EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")
BACKGROUND = (255, 255, 255)  # what transparent pixels show: white, as a browser shows a PNG
ORIENTATION = 0x0112  # the EXIF tag
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA = ("RGBA", "LA", "PA", "RGBa", "La")
DECODE = {
    "reader": "autocomp.data.folders.decode_image",
    "rule": "PIL.Image.open(f), first frame -> PIL.ImageOps.exif_transpose when EXIF orientation is not 1 -> "
            "16-bit (modes I;16*, I): clip to 0..65535, v >> 8, mode L -> 32-bit float (mode F): clip to "
            "0..255, round -> transparency (modes RGBA, LA, PA, or a 'transparency' entry, as P, L or RGB "
            "carry it): Image.alpha_composite over an opaque white (255, 255, 255) image -> convert('RGB')",
    "frames": "the first frame of an animated or multi-page file (GIF, APNG, TIFF)",
    "exif_orientation": "applied (PIL.ImageOps.exif_transpose)",
    "sixteen_bit": "v >> 8 (the high byte of each 16-bit value)",
    "alpha_background": list(BACKGROUND),
    "extensions": list(EXTENSIONS),
}
LISTING = ("torchvision ImageFolder's order and labels (class folders sorted, files sorted, symlinks followed); "
           "a folder reached twice (a symlink loop, two links to one folder) or a symlink that does not "
           "resolve is refused; files of other kinds are skipped and counted")


def readable(path: str) -> bool:
    """Whether a file is one autocomp reads (``ImageFolder``'s ``is_valid_file``)."""
    name = os.path.basename(path)
    return not name.startswith(".") and name.lower().endswith(EXTENSIONS)


def decode_image(path: str) -> Image.Image:
    """One file as the 8-bit RGB image the transforms see (the rule in ``DECODE``)."""
    with Image.open(path) as im:
        im.seek(0)
        if im.getexif().get(ORIENTATION, 1) != 1:
            im = ImageOps.exif_transpose(im)
        else:
            im.load()
        if im.mode in _SIXTEEN_BIT:
            im = Image.fromarray((np.clip(np.asarray(im, dtype=np.int64), 0, 65535) >> 8).astype(np.uint8))
        elif im.mode == "F":
            im = Image.fromarray(np.clip(np.rint(np.asarray(im)), 0, 255).astype(np.uint8))
        if im.mode in _ALPHA or "transparency" in im.info:
            rgba = im.convert("RGBA")
            im = Image.alpha_composite(Image.new("RGBA", im.size, (*BACKGROUND, 255)), rgba)
        return im.convert("RGB")


def oriented_size(im: Image.Image) -> tuple[int, int]:
    """(width, height) as decoded: EXIF orientations 5-8 turn the image by 90 degrees."""
    w, h = im.size
    return (h, w) if im.getexif().get(ORIENTATION, 1) in (5, 6, 7, 8) else (w, h)


class ImageFiles:
    """A map-style dataset of ``(decoded RGB image, class index)`` over ``root/<class>/**/file``.

    ``seen`` maps the real path of every folder read so far (across train/ and val/) to how it was
    reached; ``guard`` holds real paths a symlink must not lead into (the dataset's own folders).
    """

    def __init__(self, root: Path, seen: dict[str, str] | None = None, guard: tuple[str, ...] = ()) -> None:
        self.root = root
        self.seen = {} if seen is None else seen
        self.guard = guard + (os.path.realpath(root),)
        self.skipped: Counter[str] = Counter()
        self.classes = self._classes()
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.samples: list[tuple[str, int]] = []
        empty = []
        for c in self.classes:
            found = [(os.path.join(d, f), self.class_to_idx[c]) for d, files in self._walk(os.path.join(root, c))
                     for f in sorted(files) if self._keep(os.path.join(d, f))]
            empty += [] if found else [c]
            self.samples += found
        if empty:
            raise self._not_folder(f"class folder(s) {', '.join(empty)} hold no image file "
                                   f"({' '.join(EXTENSIONS)})")
        self.targets = [t for _, t in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        path, target = self.samples[i]
        return decode_image(path), target

    def _not_folder(self, why: str) -> AutocompError:
        return AutocompError(f"dataset {self.root}: not an image folder (one sub-folder of images per class): {why}")

    def _classes(self) -> list[str]:
        self.seen[os.path.realpath(self.root)] = str(self.root)
        try:
            entries = list(os.scandir(self.root))
        except OSError as exc:
            raise self._not_folder(f"{type(exc).__name__}: {exc.strerror}") from None
        for e in entries:
            if not _is_dir(e):
                self._check_link(e)
                self.skipped["files beside the class folders"] += 1
        classes = sorted(e.name for e in entries if _is_dir(e))
        if not classes:
            raise self._not_folder(f"no class folder in {self.root}")
        return classes

    def _walk(self, top: str) -> list[tuple[str, list[str]]]:
        """``(folder, file names)`` under ``top``, sorted by folder as ``sorted(os.walk(...))``."""
        out, stack = [], [top]
        while stack:
            folder = stack.pop()
            self._enter(folder)
            try:
                entries = list(os.scandir(folder))
            except OSError as exc:
                raise AutocompError(f"dataset {self.root}: cannot read folder {folder}: {exc.strerror}") from None
            files = []
            for e in entries:
                if _is_dir(e):
                    stack.append(e.path)
                else:
                    self._check_link(e)
                    files.append(e.name)
            out.append((folder, files))
        return sorted(out)

    def _enter(self, folder: str) -> None:
        real = os.path.realpath(folder)
        for holder in self.guard:
            if holder == real or holder.startswith(real.rstrip(os.sep) + os.sep):
                raise AutocompError(f"dataset {self.root}: {folder} is a symlink loop: it leads back to {real}, "
                                    "which holds the dataset; remove the link")
        if real in self.seen:
            raise AutocompError(f"dataset {self.root}: folder {real} is reached twice, as {self.seen[real]} and as "
                                f"{folder} (a symlink); each folder is read once: remove one")
        self.seen[real] = folder

    def _check_link(self, entry: os.DirEntry) -> None:
        if not entry.is_symlink():
            return
        try:
            os.stat(entry.path)
        except OSError as exc:
            what = "a symlink loop" if exc.errno == errno.ELOOP else f"a broken symlink (to {os.readlink(entry.path)})"
            raise AutocompError(f"dataset {self.root}: {entry.path} is {what}; remove or fix it") from None

    def _keep(self, path: str) -> bool:
        if readable(path) and os.path.isfile(path):
            return True
        name = os.path.basename(path)
        ext = os.path.splitext(name)[1].lower()
        self.skipped["hidden files (names start with '.')" if name.startswith(".") else
                     "special files (not regular files)" if not os.path.isfile(path) else
                     f"{ext} files" if ext else "files without an extension"] += 1
        return False


def _is_dir(entry: os.DirEntry) -> bool:
    """A folder, or a symlink to one; a symlink loop raises ELOOP here, and is refused as a file."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def skipped_line(root: Path, skipped: Counter[str]) -> str | None:
    """One line naming what was left out, by kind (most first), or None."""
    if not skipped:
        return None
    kinds = ", ".join(f"{n} {kind.replace('files', 'file', 1) if n == 1 else kind}"
                      for kind, n in sorted(skipped.items(), key=lambda kv: (-kv[1], kv[0])))
    return f"dataset {root}: skipped {kinds} (not images autocomp reads: it reads {' '.join(EXTENSIONS)})"
