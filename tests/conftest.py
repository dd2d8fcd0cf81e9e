"""Shared fixtures: tiny models registered once and looped over by parametrized tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch
from tiny_models import TINY_MODELS
from torch import nn

from autocomp.data import DataBundle

# Keep the suite quick and deterministic on 2 cores; never touch the user's cache.
torch.set_num_threads(1)
HEAVY = ("e2e", "slow", "benchmark")  # left out of the quick loop; `--all` runs them too


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--all", action="store_true",
                     help="run every test: the quick ones and those marked e2e, slow and benchmark")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The quick loop (no flags) leaves out the heavy markers; ``--all`` or any ``-m`` decides itself.

    Any order works: OpenVINO runs in its own process (``autocomp.runtimes._host``), so forks of
    this one stay safe after it ran (pytest-randomly shuffles the order; its seed is in the header).
    """
    if config.getoption("--all") or config.option.markexpr:
        return
    heavy = [item for item in items if any(item.get_closest_marker(m) for m in HEAVY)]
    if heavy:
        config.hook.pytest_deselected(items=heavy)
        items[:] = [item for item in items if item not in heavy]


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # Session scope: set up before module-scoped fixtures (a whole search in export/test_export_trial),
    # which otherwise trained into, or reused a teacher from, the user's own cache.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUTOCOMP_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        yield


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
