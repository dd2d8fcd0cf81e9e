"""Fixtures of the report tests; the synthetic studies live in ``report_synthetic``."""

from __future__ import annotations

from collections.abc import Callable

import optuna
import pytest
from report_synthetic import build_study


@pytest.fixture
def make_study() -> Callable[..., optuna.Study]:
    """``make_study(n=30, seed=0, storage=None, ...)`` -> a synthetic study (see ``build_study``)."""
    return build_study
