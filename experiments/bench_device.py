"""Timing on a device over SSH vs timing here: the same artifacts, the same protocol, interleaved.

For each model, four artifacts (fp32, a second session of the same fp32 file for an A/A pair,
uniform int8, a 50 % channel cut) are timed against the fp32 teacher here (local sessions) and
on the device (``--measure-on``'s path: ``autocomp.runtimes.remote``), ``--repeats`` times, the
order of "here" and "device" shuffled each repeat. Printed per artifact: the ratio to fp32 here
and on the device (median of all per-round ratios, spread = their interquartile range, at least
+-3 %), whether the two spreads overlap, and the seconds one measurement call takes here and on
the device: the difference is what SSH, sending the graph and opening sessions on the device add
to each trial.

    python experiments/bench_device.py                             # a loopback sshd (tests/loopback_sshd.py)
    python experiments/bench_device.py --device ssh://pi@raspberrypi --models lenet5

Without ``--device`` it starts OpenSSH's server on 127.0.0.1 with keys made for the run (needs
``sshd``; ``.ci/run`` installs it), so "the device" is this machine through SSH: the ratios
must agree there, and the overhead is SSH's own.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from autocomp.artifact import export, open_session
from autocomp.artifact.container import to_bytes
from autocomp.measure.latency import Ratio, paired_rounds, ratio_spread
from autocomp.models.layers import compute_layers
from autocomp.models.zoo import LeNet5, digits_cnn
from autocomp.pipeline.compress import apply
from autocomp.plan import LayerPlan, Plan
from autocomp.runtimes import RuntimeOptions, host_cpu
from autocomp.runtimes.remote import RemoteSession, close_devices, open_device

MODELS = {"digits_cnn": (digits_cnn, (1, 8, 8)), "lenet5": (LeNet5, (1, 28, 28))}
ARTIFACTS = ("fp32", "fp32 b", "int8", "channels50")


def build(name: str, tmp: Path) -> tuple[dict[str, Path], tuple[int, ...]]:
    make, shape = MODELS[name]
    torch.manual_seed(0)
    model = make().eval()
    gen = torch.Generator().manual_seed(0)
    calibration = [torch.randn(16, *shape, generator=gen).numpy() for _ in range(4)]
    example = torch.from_numpy(calibration[0][:1])
    layers = compute_layers(model)
    last = list(layers)[-1]
    plans = {"fp32": Plan(), "int8": Plan(layers={n: LayerPlan(bits=8) for n in layers}),
             "channels50": Plan(layers={n: LayerPlan(channel_ratio=0.5) for n in layers if n != last})}
    paths = {}
    for key, plan in plans.items():
        paths[key] = tmp / f"{name}.{key}.acz"
        export(apply(model, plan, example), example, calibration, paths[key])
    paths["fp32 b"] = paths["fp32"]
    return paths, shape


def bench(name: str, url: str, repeats: int, min_seconds: float, tmp: Path) -> list[dict]:
    paths, shape = build(name, tmp)
    options = RuntimeOptions(threads=1)
    device = open_device(url, "onnxruntime", options)
    here = [open_session(paths[k]) for k in ARTIFACTS]
    there = [RemoteSession(open_session(paths[k]), to_bytes(paths[k]), device) for k in ARTIFACTS]
    per_round: dict[str, list[np.ndarray]] = {"here": [], "device": []}
    seconds: dict[str, list[float]] = {"here": [], "device": []}
    rng = random.Random(0)
    for _ in range(repeats):
        for where in rng.sample(["here", "device"], 2):
            t0 = time.perf_counter()
            rounds = paired_rounds(here if where == "here" else there, shape, min_runs=30, min_seconds=min_seconds)
            seconds[where].append(time.perf_counter() - t0)
            per_round[where].append(rounds.per_round)
    rows = []
    for i, key in enumerate(ARTIFACTS[1:], start=1):
        ratio = {w: ratio_spread(np.concatenate([r[:, i] / r[:, 0] for r in per_round[w]])) for w in per_round}
        overlap = ratio["here"].low <= ratio["device"].high and ratio["device"].low <= ratio["here"].high
        rows.append({"model": name, "artifact": key, "here": fmt(ratio["here"]), "device": fmt(ratio["device"]),
                     "agree": "yes" if overlap else "NO",
                     "call s here": f"{np.median(seconds['here']):.2f}",
                     "call s device": f"{np.median(seconds['device']):.2f}"})
        print(" | ".join(f"{k}: {v}" for k, v in rows[-1].items()), file=sys.stderr, flush=True)
    return rows


def fmt(r: Ratio) -> str:
    return f"{r.median:.3f} [{r.low:.3f}-{r.high:.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="ssh://[user@]host[:port] (default: a loopback sshd)")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma list of {', '.join(MODELS)}")
    parser.add_argument("--repeats", type=int, default=7, help="measurement calls per side (default 7)")
    parser.add_argument("--min-seconds", type=float, default=0.5, help="timing per call (default 0.5)")
    args = parser.parse_args()
    unknown = [m for m in args.models.split(",") if m not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; expected {', '.join(MODELS)}")
    server = None
    with tempfile.TemporaryDirectory() as tmp:
        url = args.device
        if url is None:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
            from loopback_sshd import start_for_this_process

            server = start_for_this_process(Path(tmp) / "sshd")
            url = server.url
        try:
            rows = [row for name in args.models.split(",") for row in bench(name, url, args.repeats,
                                                                            args.min_seconds, Path(tmp))]
        finally:
            close_devices()
            if server is not None:
                server.stop()
    print(f"device {url}{' (loopback sshd on this machine)' if server else ''}; here: {host_cpu()['cpu']}; "
          f"{args.repeats} calls per side, {args.min_seconds} s each, order shuffled per repeat")
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
