"""Each compression method alone, and one combination, against the teacher, measured side by side.

For LeNet-5 on MNIST and one torchvision classifier (MNIST at 3x32x32), every row is one trial
of the real pipeline (``autocomp.pipeline.workbench.Workbench``): apply the plan, brief distillation
fine-tune, export the ``.acz`` artifact, measure it in ONNX Runtime. Accuracy is the artifact's
top-1 on the validation split; size is the artifact's bytes; latency is its median time at
batch 1 on one thread, timed interleaved with the teacher's artifact in the same rounds, so
the ratio holds on a busy machine. All rows of a model come from one run.

    python experiments/bench_methods.py --quick     # smoke run, ~1.5 minutes on 2 cores
    python experiments/bench_methods.py             # all of MNIST for LeNet-5, 10k for resnet18 (~1 hour)
    python experiments/bench_methods.py --model mobilenet_v2 --only "structured 50%" "int8 QAT"

Every row gets the same brief KD fine-tune; the "KD fine-tune only" row is that fine-tune with
no compression, the control the other rows should be read against. Quick mode's fine-tunes
are a few steps: its accuracy column shows the pipeline works, not what the methods can keep.

MNIST is read offline from ``--data-dir`` (torchvision layout: ``MNIST/raw``). Teachers are
trained once and cached under ``$AUTOCOMP_CACHE`` like ``autocomp search`` does.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from autocomp.artifact import load_model
from autocomp.data import DataBundle, DataSpec, load_data
from autocomp.measure import MeasureConfig, graph_macs, measure_artifact
from autocomp.pipeline.teacher import prepare_teacher
from autocomp.pipeline.workbench import Workbench
from autocomp.plan import DistillPlan, LayerPlan, Plan

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO / ".." / "shared" / "datasets"

# name -> (uniform per-layer settings, quant mode)
METHODS: dict[str, tuple[dict, str]] = {
    "KD fine-tune only": ({}, "qat"),  # distillation alone: the control every other row also gets
    "unstructured 80%": ({"sparsity": 0.8}, "qat"),
    "structured 50%": ({"channel_ratio": 0.5}, "qat"),
    "low rank 30%": ({"rank": 0.3}, "qat"),
    "int8 QAT": ({"bits": 8}, "qat"),
    "int4 QAT": ({"bits": 4}, "qat"),
    "int8 PTQ static": ({"bits": 8}, "ptq"),
    "int8 dynamic": ({"bits": 8}, "dynamic"),
    "combo": ({"rank": 0.5, "channel_ratio": 0.25, "sparsity": 0.5, "bits": 8}, "qat"),
}


def plan_for(layers: list[str], settings: dict, mode: str, distill: DistillPlan) -> Plan:
    return Plan(layers={n: LayerPlan(**settings) for n in layers}, distill=distill, quant_mode=mode)


def as_rgb32(data: DataBundle, n_train: int, n_val: int) -> DataBundle:
    """MNIST as a torchvision classifier takes it: 3 channels, 32x32 (bilinear, like ``--image-size``)."""

    def convert(x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
        return x.expand(-1, 3, -1, -1).contiguous()

    return DataBundle(convert(data.train_x[:n_train]), data.train_y[:n_train], convert(data.val_x[:n_val]),
                      data.val_y[:n_val], data.num_classes, data.mean * 3, data.std * 3)


def bench_model(spec: str, data: DataBundle, epochs: int, distill: DistillPlan, args: argparse.Namespace,
                workdir: Path) -> list[dict]:
    t0 = time.perf_counter()
    key = {"data": "mnist", "train": len(data.train_x), "shape": list(data.input_shape), "bench": "methods"}
    teacher = prepare_teacher(spec, data, None, epochs, 0, key)
    measure = MeasureConfig(batch=1, threads=1)
    bench = Workbench(teacher, data, measure, workdir=workdir)
    teacher_metrics = measure_artifact(bench.teacher_path, bench.val, measure,
                                       bench.teacher_session)
    teacher_macs = graph_macs(load_model(bench.teacher_path))
    rows = [_row(spec, "teacher", teacher_metrics, teacher_metrics, teacher_macs, teacher_macs)]
    print(f"  {spec}: data + teacher + workbench {time.perf_counter() - t0:.0f}s", flush=True)
    for name, (settings, mode) in METHODS.items():
        if args.only and name not in args.only:
            continue
        t1 = time.perf_counter()
        plan = plan_for(bench.layers, settings, mode, distill) if settings else Plan(distill=distill)
        result = bench.run(plan, workdir / f"{spec.replace(':', '_')}-{name.replace(' ', '_')}.acz")
        rows.append(_row(spec, name, result.metrics, teacher_metrics, result.metrics.macs, teacher_macs))
        print(f"  {spec}: {name} {time.perf_counter() - t1:.0f}s", flush=True)
    return rows


def _row(model: str, method: str, m, teacher, macs: int, teacher_macs: int) -> dict:  # noqa: ANN001
    # Latency ratio against the teacher timed in the same rounds (m.teacher_latency_ms).
    return {
        "model": model.removeprefix("torchvision:"),
        "method": method,
        "acc": m.accuracy,
        "drop": teacher.accuracy - m.accuracy,
        "kB": m.size_bytes / 1e3,
        "size": m.size_bytes / teacher.size_bytes,
        "ms": m.latency_ms,
        "latency": m.latency_ms / m.teacher_latency_ms,
        "macs": macs / teacher_macs,
    }


def print_table(rows: list[dict]) -> None:
    head = f"{'model':<10} {'method':<17} {'acc %':>6} {'drop':>6} {'size kB':>9} {'size x':>7} " \
           f"{'lat ms':>7} {'lat x':>6} {'MACs x':>7}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['model']:<10} {r['method']:<17} {r['acc']:>6.2f} {r['drop']:>+6.2f} {r['kB']:>9.1f} "
              f"{r['size']:>7.3f} {r['ms']:>7.3f} {r['latency']:>6.2f} {r['macs']:>7.3f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA), help="folder holding MNIST/raw")
    parser.add_argument("--model", default="resnet18", help="torchvision classifier (MNIST at 3x32x32)")
    parser.add_argument("--quick", action="store_true", help="small subsets and short fine-tunes (~1-2 min)")
    parser.add_argument("--train", type=int, default=None, help="LeNet-5 training samples (default 60000, quick 3000)")
    parser.add_argument("--val", type=int, default=None, help="LeNet-5 validation samples (default 10000, quick 1000)")
    parser.add_argument("--epochs", type=int, default=None, help="LeNet-5 teacher epochs (default 5, quick 2)")
    parser.add_argument("--steps", type=int, default=None, help="LeNet-5 fine-tune steps (default 300, quick 30)")
    parser.add_argument("--tv-train", type=int, default=None, help="torchvision samples (default 10000, quick 600)")
    parser.add_argument("--tv-val", type=int, default=None, help="torchvision val samples (default 2000, quick 200)")
    parser.add_argument("--tv-epochs", type=int, default=None, help="torchvision teacher epochs (default 3, quick 2)")
    parser.add_argument("--tv-steps", type=int, default=None, help="torchvision fine-tune steps (default 200, quick 8)")
    parser.add_argument("--lr", type=float, default=1e-3, help="LeNet-5 fine-tune learning rate")
    parser.add_argument("--tv-lr", type=float, default=1e-4,
                        help="torchvision fine-tune learning rate (1e-3 Adam steps undo a trained resnet18)")
    parser.add_argument("--only", nargs="*", help="method names to run (default: all)")
    parser.add_argument("--skip-torchvision", action="store_true")
    args = parser.parse_args(argv)
    quick = args.quick

    def pick(value: int | None, full: int, fast: int) -> int:
        return value if value is not None else (fast if quick else full)

    train, val = pick(args.train, 60000, 3000), pick(args.val, 10000, 1000)
    if not (Path(args.data_dir) / "MNIST" / "raw").is_dir():
        raise SystemExit(f"MNIST not found under {args.data_dir} (expected MNIST/raw)")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    start = time.perf_counter()
    tv_train, tv_val = pick(args.tv_train, 10000, 600), pick(args.tv_val, 2000, 200)
    # Read once at 1x28x28; the torchvision copy is derived from the first samples (data.py would
    # resize all 70,000 images before taking a subset).
    spec = DataSpec(name="mnist", data_dir=args.data_dir, train_samples=max(train, tv_train),
                    val_samples=max(val, tv_val))
    mnist = load_data(spec, seed=0)
    lenet_data = DataBundle(mnist.train_x[:train], mnist.train_y[:train], mnist.val_x[:val], mnist.val_y[:val],
                            mnist.num_classes, mnist.mean, mnist.std)
    kd = {"temperature": 4.0, "alpha": 0.7}
    runs = [("lenet5", lenet_data, pick(args.epochs, 5, 2),
             DistillPlan(**kd, steps=pick(args.steps, 300, 30), lr=args.lr, batch_size=64))]
    if not args.skip_torchvision:
        tv_data = as_rgb32(mnist, tv_train, tv_val)
        runs.append((f"torchvision:{args.model}", tv_data, pick(args.tv_epochs, 3, 2),
                     DistillPlan(**kd, steps=pick(args.tv_steps, 200, 8), lr=args.tv_lr, batch_size=32)))
    rows: list[dict] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-methods-") as tmp:
        for spec, data, epochs, distill in runs:
            rows += bench_model(spec, data, epochs, distill, args, Path(tmp))
            notes.append(f"{spec.removeprefix('torchvision:')}: {tuple(data.input_shape)}, {len(data.train_x)} train / "
                         f"{len(data.val_x)} val samples, teacher {epochs} epochs, KD fine-tune {distill.steps} "
                         f"steps of {distill.batch_size} at lr {distill.lr:g} (T={distill.temperature:g}, "
                         f"alpha={distill.alpha:g})")
    print(f"\nMNIST; ONNX Runtime on CPU, 1 thread, batch 1; {time.perf_counter() - start:.0f}s in all. "
          "Ratios (x) are against the teacher's artifact, timed interleaved with it.")
    print("\n".join(notes) + "\n")
    print_table(rows)


if __name__ == "__main__":
    main()
