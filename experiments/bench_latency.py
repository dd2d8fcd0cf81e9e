"""Latency targets, side by side in one process: autocomp's uniform int8 vs fp32, next to ONNX
Runtime's own ``quantize_static`` (QDQ, per-channel, U8S8) on the same fp32 ONNX graph.

For each model and batch the competitors run interleaved in rounds, their order shuffled each
round (``autocomp.measure.latency``), all on the same input and the same session options. Every
number printed is a ratio: the median of the per-round ratios and, in brackets, their spread
(interquartile range, at least +-3 %). A difference inside the spread is not a result. The
``A/A`` column times the fp32 artifact against a second session of the same file: its spread
should contain 1 (it says how noisy the machine was).

Weights are random and calibration uses random inputs: latency does not depend on the values.
autocomp's artifact is built exactly as a trial builds it (per-channel weights, QDQ U8S8,
activations calibrated on a few batches); ORT's tool gets the same fp32 graph and batches.

    python experiments/bench_latency.py                       # every model, batch 1 and 32
    python experiments/bench_latency.py --models mobilenet_v2-224 --batches 1 --min-seconds 5
    python experiments/bench_latency.py --threads 2

Targets (issue 12): MobileNetV2 at 32 and 224 px, batch 1 and 32, within 5 % of quantize_static
(``int8/ORT`` <= 1.05).
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import torch

from autocomp.artifact import export, load_model, open_session
from autocomp.artifact.container import write
from autocomp.measure.latency import Ratio, paired_rounds
from autocomp.models.layers import compute_layers
from autocomp.models.zoo import LeNet5
from autocomp.pipeline.compress import apply
from autocomp.plan import LayerPlan, Plan


def _torchvision(name: str) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        import torchvision

        return getattr(torchvision.models, name)(num_classes=10)

    return build


MODELS: dict[str, tuple[Callable[[], torch.nn.Module], tuple[int, ...]]] = {
    "lenet5": (LeNet5, (1, 28, 28)),
    "resnet18-32": (_torchvision("resnet18"), (3, 32, 32)),
    "mobilenet_v2-32": (_torchvision("mobilenet_v2"), (3, 32, 32)),
    "mobilenet_v2-224": (_torchvision("mobilenet_v2"), (3, 224, 224)),
}


def ort_quantize_static(fp32: onnx.ModelProto, calibration: list[np.ndarray], out: Path) -> onnx.ModelProto:
    """ONNX Runtime's own tool on the same fp32 graph: QDQ, per-channel int8 weights, uint8 activations."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"input": b} for b in calibration])

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    src = out.with_suffix(".fp32.onnx")
    onnx.save(fp32, src)
    logging.getLogger().setLevel(logging.ERROR)  # its advice to pre-process: the graph is the same for both
    quantize_static(src, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
    return onnx.load(out)


def build(name: str, tmp: Path, threads: int) -> tuple[dict[str, object], tuple[int, ...]]:
    """Sessions: ``fp32``, its twin ``fp32 b`` (A/A), autocomp's ``int8`` and ORT's ``ort``."""
    make, shape = MODELS[name]
    torch.manual_seed(0)
    model = make().eval()
    gen = torch.Generator().manual_seed(0)
    calibration = [torch.randn(16, *shape, generator=gen).numpy() for _ in range(4)]
    example = torch.from_numpy(calibration[0][:1])
    export(apply(model, Plan(), example), example, calibration, tmp / f"{name}.fp32.acz")
    int8 = Plan(layers={n: LayerPlan(bits=8) for n in compute_layers(model)})
    export(apply(model, int8, example), example, calibration, tmp / f"{name}.int8.acz")
    theirs = ort_quantize_static(load_model(tmp / f"{name}.fp32.acz"), calibration, tmp / f"{name}.ort.onnx")
    write(theirs, tmp / f"{name}.ort.acz", {})  # the same container and session options as ours
    sessions = {
        "fp32": open_session(tmp / f"{name}.fp32.acz", threads),
        "fp32 b": open_session(tmp / f"{name}.fp32.acz", threads),
        "int8": open_session(tmp / f"{name}.int8.acz", threads),
        "ort": open_session(tmp / f"{name}.ort.acz", threads),
    }
    return sessions, shape


def fmt(r: Ratio) -> str:
    return f"{r.median:.3f} [{r.low:.3f}-{r.high:.3f}]"


def bench(name: str, batches: list[int], threads: int, min_seconds: float, tmp: Path) -> list[dict]:
    sessions, shape = build(name, tmp, threads)
    names = list(sessions)
    rows = []
    for batch in batches:
        started = time.perf_counter()
        rounds = paired_rounds([sessions[k] for k in names], shape, batch, min_runs=20 if batch > 1 else 50,
                               min_seconds=min_seconds)
        i = {k: names.index(k) for k in names}
        fp32_ms = rounds.timings()[i["fp32"]].median_ms
        ours_vs_ort = rounds.ratio(i["int8"], i["ort"])
        rows.append({
            "model": name, "batch": batch, "fp32 ms": f"{fp32_ms:.3f}",
            "int8/fp32": fmt(rounds.ratio(i["int8"], i["fp32"])),
            "ORT qs/fp32": fmt(rounds.ratio(i["ort"], i["fp32"])),
            "int8/ORT": fmt(ours_vs_ort),
            "<=1.05": "yes" if ours_vs_ort.median <= 1.05 else "NO",
            "A/A": fmt(rounds.ratio(i["fp32 b"], i["fp32"])),
            "rounds": rounds.per_round.shape[0], "s": f"{time.perf_counter() - started:.0f}",
        })
        print(" | ".join(f"{k}: {v}" for k, v in rows[-1].items()), file=sys.stderr, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma list of {', '.join(MODELS)}")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--min-seconds", type=float, default=3.0, help="timing per model and batch (default 3)")
    args = parser.parse_args()
    unknown = [m for m in args.models.split(",") if m not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; expected {', '.join(MODELS)}")
    import onnxruntime

    batches = [int(b) for b in args.batches.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            rows += bench(name, batches, args.threads, args.min_seconds, Path(tmp))
    print(f"ONNX Runtime {onnxruntime.__version__} CPU, {args.threads} thread(s), {platform.processor() or 'cpu'}; "
          "ratios: median of per-round ratios [interquartile range, at least +-3 %], competitors interleaved "
          "in shuffled rounds")
    print(markdown(rows))


def markdown(rows: list[dict]) -> str:
    """A Markdown table, to paste into the README as it is."""
    head = list(rows[0]) if rows else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(str(r[k]) for k in head) + " |" for r in rows])


if __name__ == "__main__":
    main()
