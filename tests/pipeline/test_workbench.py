"""Workbench's records: how its latencies are timed, and where its inputs came from."""

from __future__ import annotations

import numpy as np
import torch

from autocomp.measure import MeasureConfig, measure_artifact, timing_input
from autocomp.pipeline.workbench import Workbench


def test_the_bench_records_the_input_its_latencies_are_timed_on(tiny_data, monkeypatch) -> None:
    from tiny_models import tiny_cnn

    torch.manual_seed(0)
    bench = Workbench(tiny_cnn().eval(), tiny_data, MeasureConfig(batch=2, min_runs=3, min_seconds=0.0))
    timing = bench.timing
    assert timing["input"]["shape"] == [2, 1, 8, 8] and timing["batch"] == 2 and timing["warmup_runs"] >= 1
    seen: list[np.ndarray] = []
    run = bench.teacher_session.run
    monkeypatch.setattr(bench.teacher_session, "run", lambda out, feed: seen.append(feed["input"]) or run(out, feed))
    # The call Workbench.run makes: the teacher's session is timed beside the artifact.
    measure_artifact(bench.teacher_path, bench.val, bench.measure, bench.teacher_session)
    timed = [x for x in seen if x.shape[0] == 2]  # accuracy batches are the validation images
    assert all(np.array_equal(x, timing_input((1, 8, 8), 2)) for x in timed)
    assert len(timed) >= timing["warmup_runs"] + 3
    # Tensors handed over directly: the record says they are used as given.
    pre = bench.data.preprocessing
    assert pre["split"]["method"] == "given" and pre["pixel_scale"]["multiply_by"] == 1.0
