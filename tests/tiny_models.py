"""Tiny models registered once and looped over by parametrized tests (imported by name,
not through conftest, so per-folder conftest files cannot shadow them)."""

from __future__ import annotations

import torch
from torch import nn


class TinyResidual(nn.Module):
    """Conv stem, one residual block with a 1x1 projection, a depthwise conv, a linear head."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.conv_a = nn.Conv2d(8, 8, 3, padding=1)
        self.bn_a = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.proj = nn.Conv2d(8, 16, 1)
        self.head = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.bn_a(self.conv_a(x)))
        x = torch.relu(self.proj(self.dw(x)))
        return self.head(x.mean(dim=(2, 3)))


def tiny_cnn(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, num_classes),
    )


def tiny_mlp(width: int = 48, num_classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, num_classes))


def wide_mlp() -> nn.Module:
    """An MLP wide enough (256) that packing and sparse encodings show in the artifact's bytes."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                         nn.Linear(256, 10)).eval()


TINY_MODELS = {"tiny_cnn": tiny_cnn, "tiny_residual": TinyResidual, "tiny_mlp": tiny_mlp}
