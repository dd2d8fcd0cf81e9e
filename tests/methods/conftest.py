"""Fixtures of the method tests; the helpers live in ``methods_kit``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from methods_kit import Exported, export_student
from torch import nn


@pytest.fixture
def exporter(tmp_path: Path) -> Callable[..., Exported]:
    """``exporter(student, x, mode="qat", name="s")``: export, load back, count."""

    def go(student: nn.Module, x: torch.Tensor, mode: str = "qat", name: str = "s") -> Exported:
        return export_student(student, x, tmp_path / f"{name}.acz", mode)

    return go
