"""Latency of the deployable artifact: int8 vs fp32 artifact, fp32 artifact vs eager PyTorch.

All timings of one model are taken in one process, interleaved in rounds (autocomp.measure
.latency.time_calls), so the ratios hold on a noisy machine. Weights are random: latency does
not depend on their values, and the int8 artifact is built exactly as a trial builds it
(per-channel weights, activations calibrated on a few batches, ONNX Runtime QDQ).

    python experiments/bench_latency.py            # LeNet-5 and resnet18 at 32x32, batch 1 and 32
    python experiments/bench_latency.py --threads 2
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from autocomp.artifact import export, open_session
from autocomp.compress import apply
from autocomp.layers import compute_layers
from autocomp.measure.latency import time_calls
from autocomp.models import LeNet5
from autocomp.plan import LayerPlan, Plan


def models() -> dict[str, tuple[torch.nn.Module, tuple[int, ...]]]:
    import torchvision

    torch.manual_seed(0)
    return {
        "lenet5 (1x28x28)": (LeNet5().eval(), (1, 28, 28)),
        "resnet18 (3x32x32)": (torchvision.models.resnet18(num_classes=10).eval(), (3, 32, 32)),
    }


def bench(name: str, model: torch.nn.Module, shape: tuple[int, ...], batches: list[int], threads: int,
          tmp: Path) -> list[dict]:
    calib = [torch.randn(32, *shape).numpy() for _ in range(4)]
    example = torch.randn(1, *shape)
    export(apply(model, Plan(), example), example, calib, tmp / "fp32.acz")
    int8 = Plan(layers={n: LayerPlan(bits=8) for n in compute_layers(model)})
    info = export(apply(model, int8, example), example, calib, tmp / "int8.acz")
    fp32_s, int8_s = open_session(tmp / "fp32.acz", threads), open_session(tmp / "int8.acz", threads)
    torch.set_num_threads(threads)
    rows = []
    for batch in batches:
        x = torch.randn(batch, *shape)
        xn = x.numpy()
        with torch.inference_mode():
            eager, fp32, q8 = time_calls(
                [lambda x=x: model(x), lambda xn=xn: fp32_s.run(None, {"input": xn}),
                 lambda xn=xn: int8_s.run(None, {"input": xn})],
                min_runs=50 if batch == 1 else 20, min_seconds=1.0,
            )
        rows.append({
            "model": name, "batch": batch, "eager ms": eager.median_ms, "fp32 artifact ms": fp32.median_ms,
            "int8 artifact ms": q8.median_ms, "int8/fp32": q8.median_ms / fp32.median_ms,
            "fp32/eager": fp32.median_ms / eager.median_ms, "int8 nodes": info.quantized_nodes,
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batches", default="1,32")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (model, shape) in models().items():
            rows += bench(name, model, shape, batches, args.threads, Path(tmp))
    import pandas as pd

    frame = pd.DataFrame(rows)
    print(f"ONNX Runtime CPU, {args.threads} thread(s); medians of interleaved runs")
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
