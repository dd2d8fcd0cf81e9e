"""Image folders as they really are: symlinks, GIF, 16-bit, alpha, EXIF, stray files, too few classes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from image_kit import make_image_folder, pattern, save_sixteen_bit, save_with_orientation
from PIL import Image

from autocomp.data import DataSpec, load_data
from autocomp.data.folders import DECODE, decode_image, readable
from autocomp.errors import AutocompError


def _load(path: Path, log: list[str] | None = None, **kw: object) -> object:
    spec = {"name": str(path), "image_size": 12, "workers": 0, "augment": "none", "mean": (0.0,) * 3,
            "std": (1.0,) * 3, **kw}
    return load_data(DataSpec(**spec), seed=0, log=(log.append if log is not None else None))


def _val(data) -> dict[str, torch.Tensor]:  # noqa: ANN001
    """Each validation file's model input, by file name."""
    x = torch.cat([b for b, _ in data.eval_batches(64)])
    names = [Path(f).name for f in data.preprocessing["split"]["val_files"]]
    return dict(zip(names, x, strict=True))


def _twins(root: Path) -> Path:
    """val/a holds plain 8-bit upright images and their EXIF-rotated, 16-bit, GIF and RGBA twins."""
    make_image_folder(root, per_class=2, classes=2, val_per_class=1, sizes=(14, 20))
    a = root / "val" / "class_0"
    upright = pattern(13, 17, seed=1)
    Image.fromarray(upright).save(a / "up_plain.png")
    save_with_orientation(upright, a / "up_rot6.png", 6)
    save_with_orientation(upright, a / "up_rot8.png", 8)
    save_with_orientation(upright, a / "up_rot3.png", 3)
    gray = pattern(15, 11, seed=2)[..., 0]
    Image.fromarray(gray).save(a / "gray_plain.png")
    save_sixteen_bit(gray, a / "gray_16bit.png")
    paletted = Image.fromarray(upright).quantize(16)  # GIF holds a palette: compare with the same palette as PNG
    paletted.save(a / "pal_plain.png")
    paletted.save(a / "pal.gif")
    opaque = np.dstack([upright, np.full(upright.shape[:2], 255, np.uint8)])
    Image.fromarray(opaque).save(a / "up_rgba.png")
    return root


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _twins(tmp_path_factory.mktemp("twins") / "d")


def test_exif_rotated_16_bit_gif_and_rgba_twins_reach_the_model_with_the_same_pixels(twins: Path) -> None:
    data = _load(twins)
    x = _val(data)
    for twin in ("up_rot6.png", "up_rot8.png", "up_rot3.png", "up_rgba.png"):
        assert torch.equal(x[twin], x["up_plain.png"]), twin
    assert torch.equal(x["gray_16bit.png"], x["gray_plain.png"])
    assert x["gray_16bit.png"].min() < 0.5  # not clipped to white, as convert("RGB") of I;16 does
    assert torch.equal(x["pal.gif"], x["pal_plain.png"])
    # The rotated files are stored 17x13; decoded they are 13x17, and that is the size on record.
    assert Image.open(twins / "val" / "class_0" / "up_rot6.png").size == (17, 13)


def test_sizes_on_record_are_the_decoded_ones(tmp_path: Path) -> None:
    """EXIF-turned images count at their upright size: a folder of them all 8x12 upright has one size."""
    root = tmp_path / "d"
    for split in ("train", "val"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            Image.fromarray(pattern(8, 12)).save(root / split / c / "plain.png")
            save_with_orientation(pattern(8, 12), root / split / c / "turned.png", 6)
    data = load_data(DataSpec(str(root), workers=0, augment="none"))  # no --image-size: one size, so accepted
    assert data.input_shape == (3, 12, 8)


def test_decode_rule_on_alpha_16_bit_and_frames(tmp_path: Path) -> None:
    half = np.zeros((2, 2, 4), np.uint8)
    half[..., 0], half[..., 3] = 200, [[0, 128], [255, 64]]
    Image.fromarray(half).save(tmp_path / "rgba.png")
    out = np.asarray(decode_image(str(tmp_path / "rgba.png")))
    assert out[0, 0].tolist() == [255, 255, 255]  # fully transparent: the white background, not black
    assert out[1, 0].tolist() == [200, 0, 0]  # opaque: as stored
    assert abs(int(out[0, 1, 0]) - round((200 * 128 + 255 * 127) / 255)) <= 1  # over white, weighted by alpha
    Image.fromarray(np.array([[0, 255]], np.uint8)).convert("LA").save(tmp_path / "la.png")
    assert np.asarray(decode_image(str(tmp_path / "la.png"))).tolist() == [[[0, 0, 0], [255, 255, 255]]]
    pal = Image.new("P", (2, 1))
    pal.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    pal.putpixel((1, 0), 1)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "p.png")
    assert np.asarray(decode_image(str(tmp_path / "p.png"))).tolist() == [[[255, 255, 255], [10, 20, 30]]]
    # 16 bits: the high byte, so p * 256 and p * 257 both come back as p.
    Image.fromarray(np.array([[0, 255 * 256, 65535, 128 * 256 + 255]], np.uint16)).save(tmp_path / "i16.png")
    assert np.asarray(decode_image(str(tmp_path / "i16.png")))[0, :, 0].tolist() == [0, 255, 255, 128]
    frames = [Image.new("RGB", (4, 4), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert np.asarray(decode_image(str(tmp_path / "anim.gif")))[0, 0].tolist() == [255, 0, 0]  # the first frame


def test_decode_rule_and_class_mapping_are_recorded(twins: Path) -> None:
    pre = _load(twins).preprocessing
    assert pre["class_to_idx"] == {"class_0": 0, "class_1": 1}
    assert pre["decode"] == DECODE and pre["decode"]["alpha_background"] == [255, 255, 255]
    assert "v >> 8" in pre["decode"]["rule"] and "exif_transpose" in pre["decode"]["rule"]
    assert "reached twice" in pre["split"]["listing"]
    assert pre["split"]["classes"] == ["class_0", "class_1"]  # existing keys kept
    assert "decode" in pre["pixel_scale"]["stored"]


def test_the_listing_is_image_folders_with_the_recorded_loader(twins: Path, tmp_path: Path) -> None:
    """What the record's reader names lists the same files, labels and pixels (symlinked folder too)."""
    import torchvision

    outside = tmp_path / "outside"
    make_image_folder(outside, per_class=2, classes=1, split=False)
    os.symlink(outside / "class_0", twins / "train" / "class_1" / "linked")
    try:
        data = _load(twins)
        theirs = torchvision.datasets.ImageFolder(str(twins / "train"), loader=decode_image, is_valid_file=readable)
        assert data.train.dataset.samples == theirs.samples and len(theirs) == 4 + 2
        assert np.array_equal(np.asarray(data.train.dataset[5][0]), np.asarray(theirs[5][0]))
    finally:
        os.unlink(twins / "train" / "class_1" / "linked")


def test_skipped_files_are_counted_by_kind_in_one_line(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "d", per_class=2, classes=2, val_per_class=1)
    a = root / "train" / "class_0"
    for name in ("notes.txt", "labels.txt", ".DS_Store", "._0000.jpg", "README"):
        (a / name).write_bytes(b"x")
    (root / "train" / "stray.png").write_bytes(b"x")  # beside the class folders: not in any class
    lines: list[str] = []
    data = _load(root, log=lines)
    assert data.n_train == 4
    assert lines == [f"warning: dataset {root}: skipped 2 .txt files, 2 hidden files (names start with '.'), "
                     "1 file beside the class folders, 1 file without an extension (not images autocomp reads: "
                     "it reads .bmp .gif .jpeg .jpg .pgm .png .ppm .tif .tiff .webp)"]
    assert data.preprocessing["skipped"]["counts"][".txt files"] == 2
    assert "skipped" not in _load(make_image_folder(tmp_path / "clean", per_class=2, classes=2)).preprocessing


def _loop(root: Path) -> str:
    os.symlink("..", root / "train" / "class_0" / "sub")
    return "train/class_0/sub is a symlink loop: it leads back to"


def _self_link(root: Path) -> str:
    os.symlink("me.png", root / "train" / "class_1" / "me.png")
    return "train/class_1/me.png is a symlink loop; remove or fix it"


def _broken_link(root: Path) -> str:
    os.symlink("gone.png", root / "val" / "class_0" / "x.png")
    return "val/class_0/x.png is a broken symlink (to gone.png)"


def _twice(root: Path) -> str:
    os.symlink(root / "train" / "class_0", root / "train" / "class_1" / "again")
    return "is reached twice, as"


def _val_is_train(root: Path) -> str:
    os.symlink(root / "train" / "class_1", root / "val" / "class_1" / "more")
    return "train/class_1 is reached twice"


def _up_to_root(root: Path) -> str:
    os.symlink("/", root / "train" / "class_1" / "everything")
    return "train/class_1/everything is a symlink loop: it leads back to /, which holds the dataset"


def _one_class(root: Path) -> str:
    for split in ("train", "val"):
        for f in (root / split / "class_1").iterdir():
            f.unlink()
        (root / split / "class_1").rmdir()
    return "1 class folder (class_0): a classifier needs at least 2 classes"


def _mismatch(root: Path) -> str:
    os.rename(root / "train" / "class_1", root / "train" / "cats")
    return "train/ and val/ have different class folders (only in train/: cats; only in val/: class_1)"


@pytest.mark.parametrize("make", [_loop, _self_link, _broken_link, _twice, _val_is_train, _up_to_root, _one_class,
                                  _mismatch], ids=lambda f: f.__name__.strip("_"))
def test_hostile_folders_are_refused_in_one_line_naming_the_path(tmp_path: Path, make) -> None:
    root = make_image_folder(tmp_path / "d", per_class=2, classes=2, val_per_class=1)
    words = make(root)
    with pytest.raises(AutocompError) as info:
        _load(root)
    line = str(info.value)
    assert "\n" not in line and words in line, line


def test_one_class_without_a_split_is_refused(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "d", per_class=6, classes=1, split=False)
    with pytest.raises(AutocompError, match=r"1 class folder \(class_0\): a classifier needs at least 2"):
        _load(root)
