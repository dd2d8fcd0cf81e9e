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


class TinyViT(nn.Module):
    """A ViT built on ``nn.TransformerEncoderLayer``: patch conv, class token, positional
    embedding, pre-norm encoder layers with GELU MLPs, a linear head (8x8 one-channel inputs)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 8, patch: int = 4,
                 dim: int = 16, depth: int = 2, heads: int = 2, mlp: int = 32) -> None:
        super().__init__()
        self.patch = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, (image_size // patch) ** 2 + 1, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, mlp, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        return self.head(self.norm(self.encoder(x))[:, 0])
