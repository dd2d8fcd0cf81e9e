"""Models and the teacher cache: builders, checkpoints, and a cache that follows the builder's source."""

from __future__ import annotations

from pathlib import Path

import torch

from autocomp._cache import cache_dir
from autocomp._user_code import source_digest
from autocomp.config import SearchConfig
from autocomp.pipeline.setup import prepare

BUILDER = """\
from torch import nn

def build(num_classes=10):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, {width}), nn.{act}(), nn.Linear({width}, num_classes))
"""


def test_editing_a_builder_never_reuses_its_old_teacher(tmp_path: Path) -> None:
    path = tmp_path / "net.py"
    spec = f"{path}:build"

    def teacher(width: int, act: str) -> torch.nn.Module:
        path.write_text(BUILDER.format(width=width, act=act))
        return prepare(SearchConfig(model=spec, teacher_epochs=1, train_samples=64), log=lambda s: None)[0]

    first = teacher(16, "ReLU")
    assert first[1].out_features == 16
    assert teacher(32, "ReLU")[1].out_features == 32  # other shapes: trained anew, no load_state_dict error
    teacher(16, "Tanh")  # same shapes, other code: a teacher of its own, not the ReLU one's weights
    cached = list(cache_dir().glob(f"teachers/{spec.replace(':', '_').replace('/', '_')}-*.pt"))
    assert len(cached) == 3


def test_source_digest_is_none_for_builtin_and_torchvision_models() -> None:
    assert source_digest("digits_cnn") is None and source_digest("torchvision:resnet18") is None
