"""experiments/bench_spells.py: four arms, three files, one table (a few seconds of timing)."""

from __future__ import annotations

import sys

import pytest
from experiments_kit import load_experiment

pytestmark = pytest.mark.benchmark


def test_every_arm_times_every_file_and_the_paced_arm_counts_its_timings(monkeypatch, capsys) -> None:
    bench = load_experiment("bench_spells")
    monkeypatch.setattr(sys, "argv", ["bench_spells.py", "--minutes", "0.02"])
    bench.main()
    lines = capsys.readouterr().out.strip().splitlines()
    rows = [line.split() for line in lines[2:]]
    assert [(r[0], r[1]) for r in rows] == [(a, f) for a in bench.ARMS for f in ("int8", "int4", "mixed")]
    for arm, _, median, *_, timings in rows:
        assert 0.1 < float(median) < 1.5  # a quantized LeNet-5 beside its fp32 teacher
        # paced and paced5: up to RETIMES more per measurement; once and once-bis: one
        allowed = (1.0, 3.0) if arm.startswith("paced") else (1.0, 1.0)
        assert allowed[0] <= float(timings) <= allowed[1]
