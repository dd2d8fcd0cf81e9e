"""Shared fixtures: tiny models registered once and looped over by parametrized tests."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from autocomp.data import DataBundle

# Keep the suite quick and deterministic on 2 cores; never touch the user's cache.
torch.set_num_threads(1)


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


def tiny_mlp(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, num_classes))


TINY_MODELS = {"tiny_cnn": tiny_cnn, "tiny_residual": TinyResidual, "tiny_mlp": tiny_mlp}


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOCOMP_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(params=sorted(TINY_MODELS))
def tiny_model(request: pytest.FixtureRequest) -> nn.Module:
    torch.manual_seed(0)
    model = TINY_MODELS[request.param]().eval()
    for m in model.modules():  # non-trivial BatchNorm so folding is exercised
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    return model


@pytest.fixture
def tiny_data() -> DataBundle:
    """Synthetic 8x8 one-channel images whose class is readable from the pixels."""
    gen = torch.Generator().manual_seed(0)
    n_train, n_val = 256, 128
    y = torch.randint(0, 10, (n_train + n_val,), generator=gen)
    x = torch.randn(n_train + n_val, 1, 8, 8, generator=gen) * 0.3
    x[torch.arange(len(y)), 0, y % 8, y // 8 * 4] += 2.0
    return DataBundle(x[:n_train], y[:n_train], x[n_train:], y[n_train:], 10, [0.0], [1.0])


def pytest_report_header(config: pytest.Config) -> str:
    return f"autocomp tests, torch {torch.__version__}, {os.cpu_count()} cpus"
