"""Hostile image folders through the real CLI: exit 2, one ``autocomp: error:`` line, nothing written.

Built like ``tests/test_hostile.py``'s ``SEARCH_CASES`` (to be moved into its catalogue): each case
makes its folder under the run's working folder and names the words the line must hold.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from image_kit import make_image_folder

from autocomp.cli import main

SEARCH = ["search", "--run-dir", "run", "--study-name", "s", "--teacher-epochs", "1", "--n-trials", "1",
          "--no-progress", "--image-size", "16"]


def _folder(tmp: Path, name: str) -> Path:
    return make_image_folder(tmp / name, per_class=2, classes=2, val_per_class=1)


def _loop(tmp: Path) -> None:
    os.symlink("..", _folder(tmp, "loop") / "train" / "class_0" / "sub")


def _self_link(tmp: Path) -> None:
    os.symlink("me.png", _folder(tmp, "self_link") / "train" / "class_1" / "me.png")


def _broken_link(tmp: Path) -> None:
    os.symlink("gone.png", _folder(tmp, "broken_link") / "val" / "class_0" / "x.png")


def _twice(tmp: Path) -> None:
    root = _folder(tmp, "twice")
    os.symlink(root / "train" / "class_0", root / "train" / "class_1" / "again")


def _one_class(tmp: Path) -> None:
    make_image_folder(tmp / "one_class", per_class=2, classes=1, val_per_class=1)


def _mismatch(tmp: Path) -> None:
    root = _folder(tmp, "mismatch")
    os.rename(root / "train" / "class_1", root / "train" / "cats")


FOLDER_CASES: dict[str, tuple[Callable[[Path], None], list[str], str]] = {
    "image folder with a directory loop": (_loop, ["--dataset", "loop"], "loop/train/class_0/sub is a symlink loop"),
    "image folder with a self-symlink": (_self_link, ["--dataset", "self_link"],
                                         "self_link/train/class_1/me.png is a symlink loop"),
    "image folder with a broken symlink": (_broken_link, ["--dataset", "broken_link"],
                                           "broken_link/val/class_0/x.png is a broken symlink (to gone.png)"),
    "image folder with a folder reached twice": (_twice, ["--dataset", "twice"],
                                                 "twice/train/class_0 is reached twice"),
    "image folder with one class": (_one_class, ["--dataset", "one_class"],
                                    "1 class folder (class_0): a classifier needs at least 2 classes"),
    "image folder with mismatched class folders": (
        _mismatch, ["--dataset", "mismatch"],
        "train/ and val/ have different class folders (only in train/: cats; only in val/: class_1)"),
}


def _tree(folder: Path) -> set[str]:
    """Every path under ``folder``, symlinks listed but never followed (a loop would never end)."""
    out = set()
    for top, dirs, files in os.walk(folder):
        out.update(os.path.relpath(os.path.join(top, n), folder) for n in dirs + files)
    return out


@pytest.mark.parametrize("case", sorted(FOLDER_CASES))
def test_hostile_image_folders_are_refused_in_one_line_and_write_nothing(case: str, tmp_path: Path, capsys,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    make, args, words = FOLDER_CASES[case]
    make(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = _tree(tmp_path)
    code = main(SEARCH + args)
    err = capsys.readouterr().err.strip()
    assert code == 2, f"exit {code}, stderr {err[-2000:]!r}"
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("autocomp: error: "), err[-2000:]
    assert words in lines[0], lines[0]
    assert _tree(tmp_path) == before, f"wrote {sorted(_tree(tmp_path) - before)}"
