"""Where every validation image came from and how its pixels became floats, as records.

The study stores them inside ``preprocessing`` (``Data.preprocessing``): ``split`` says which
samples form the validation split (and the seeded ``--val-samples`` subset), ``pixel_scale`` how
a stored value becomes the float the transform normalizes. With the rest of ``preprocessing``
(resize, crop, mean, std) an outsider rebuilds the exact inputs with numpy, PIL and a dataset
reader, and gets the card's accuracy from the exported ONNX file.

Digests: sha256 of the items (indices in decimal, or paths) joined by ``"\\n"``, UTF-8.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

GIVEN_SPLIT = {"method": "given", "validation": "the validation data given to the Python API, every sample in order"}
LIST_LIMIT = 20_000  # lists longer than this are recorded by their digest only
SUBSET_RULE = "torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k].tolist()"
DIGEST_RULE = "sha256 of the items (indices in decimal, or paths) joined by '\\n', utf-8"
# torchvision's ToDtype(float32, scale=True) multiplies by a float32 1/max; dividing instead
# differs in the last bit for 2 of 3 uint8 values, enough to flip a borderline prediction.
_TO_FLOAT = "float32(value) * float32({m!r})"


def digest(items: Sequence[object]) -> str:
    return hashlib.sha256("\n".join(str(v) for v in items).encode()).hexdigest()


def listed(name: str, items: Sequence[object]) -> dict:
    """``{name: items, name_sha256: ...}``; the list itself only up to ``LIST_LIMIT`` items."""
    out: dict = {f"{name}_sha256": digest(items), f"n_{name}": len(items)}
    if len(items) <= LIST_LIMIT:
        out[name] = list(items)
    return out


def subset_record(indices: list[int] | None, n: int, seed: int, with_list: bool = True) -> dict | None:
    """The seeded subset ``--train-samples``/``--val-samples`` kept (``seeded_subset``), or None."""
    if indices is None:
        return None
    record = {"rule": SUBSET_RULE, "n": n, "k": len(indices), "seed": seed,
              "indices_are": "0-based positions in the split (in the split's order), in the order they are used"}
    return {**record, **(listed("indices", indices) if with_list else {"indices_sha256": digest(indices)})}


def pixel_scale(dtype: torch.dtype, stored: str) -> dict:
    """How a sample's stored value becomes the float32 the normalization sees (before mean/std)."""
    if dtype.is_floating_point:
        return {"stored": stored, "dtype": str(dtype).removeprefix("torch."), "multiply_by": 1.0,
                "to_float": "float32(value), used as given"}
    top = torch.iinfo(dtype).max
    m = 1.0 / top
    return {"stored": stored, "dtype": str(dtype).removeprefix("torch."), "range": [0, top], "multiply_by": m,
            "to_float": _TO_FLOAT.format(m=m) + f" (torchvision ToDtype(float32, scale=True); not value / {top})"}


def digits_pixel_scale() -> dict:
    return {"stored": "float64 0-16 (sklearn.datasets.load_digits().images)", "dtype": "float64",
            "range": [0, 16], "multiply_by": 1 / 16, "to_float": "float32(value) / 16 (exact: a power of two)"}


def sample_pixel_scale(sample: object, stored: str) -> dict:
    """The scale of one raw sample (PIL image or tensor) as the eval transform's ``ToImage`` sees it."""
    from torchvision.transforms.v2 import functional as F

    try:
        image = F.to_image(sample)
    except Exception as exc:  # a user's sample of a type torchvision cannot read: say so, do not fail
        return {"stored": f"{stored}: {type(sample).__name__}, not read ({type(exc).__name__})", "multiply_by": None}
    mode = getattr(sample, "mode", None)
    return pixel_scale(image.dtype, f"{stored} (PIL mode {mode})" if mode else stored)
