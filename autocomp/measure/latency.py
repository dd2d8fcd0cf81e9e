"""Latency: median and p90 wall time of repeated runs after warm-up.

Two sessions timed together (``paired``) alternate in short rounds, so slow spells on a shared
machine hit both and their ratio holds even when absolute times drift.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Timing:
    median_ms: float
    p90_ms: float
    runs: int


def _summary(samples: list[float]) -> Timing:
    arr = np.asarray(samples) * 1e3
    return Timing(float(np.median(arr)), float(np.percentile(arr, 90)), len(arr))


def _runner(session) -> Callable[[np.ndarray], object]:  # noqa: ANN001
    return lambda x: session.run(None, {"input": x})


def time_calls(
    fns: list[Callable[[], object]], warmup: int = 5, min_runs: int = 30, min_seconds: float = 0.2,
    max_runs: int = 2000, round_size: int = 5,
) -> list[Timing]:
    """Time each zero-argument callable, interleaved in rounds of ``round_size`` calls."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    samples: list[list[float]] = [[] for _ in fns]
    start = time.perf_counter()
    while True:
        for fn, out in zip(fns, samples, strict=True):
            for _ in range(round_size):
                t0 = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t0)
        n = len(samples[0])
        if n >= max_runs or (n >= min_runs and time.perf_counter() - start >= min_seconds):
            return [_summary(s) for s in samples]


def session_latency(session, input_shape: tuple[int, ...], batch: int = 1, **kw: float) -> Timing:  # noqa: ANN001
    x = np.random.default_rng(0).standard_normal((batch, *input_shape)).astype(np.float32)
    run = _runner(session)
    return time_calls([lambda: run(x)], **kw)[0]


def paired_latency(sessions: list, input_shape: tuple[int, ...], batch: int = 1, **kw: float) -> list[Timing]:
    """Latency of several sessions on the same input, measured interleaved."""
    x = np.random.default_rng(0).standard_normal((batch, *input_shape)).astype(np.float32)
    runners = [_runner(s) for s in sessions]
    return time_calls([lambda r=r: r(x) for r in runners], **kw)


def eager_latency(model, input_shape: tuple[int, ...], batch: int = 1, threads: int = 1, **kw: float) -> Timing:  # noqa: ANN001
    """Eager PyTorch latency of a module, for reference only (never an objective)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = torch.randn(batch, *input_shape, generator=torch.Generator().manual_seed(0))
        model = model.eval().cpu()
        with torch.inference_mode():
            return time_calls([lambda: model(x)], **kw)[0]
    finally:
        torch.set_num_threads(previous)
