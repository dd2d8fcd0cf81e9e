"""Spatial SVD, Tucker-2 and CP side by side on the k x k convs, at matched MAC reductions; then
one search offering all three against one offering spatial SVD only, at the same budget.

For each torchvision model (MNIST at 3x32x32), every row is one trial of the real pipeline
(``Workbench.run``: apply, the same brief KD fine-tune, export the ``.acz``, measure it in ONNX
Runtime at batch 1 on one thread, timed interleaved with the teacher's artifact). A method's
value is chosen once for all k x k convs (groups=1) so that their summed MACs fall by the target
(about 2x and 4x), from each method's own MAC count; the achieved share is printed. The "KD
fine-tune only" row is the control (no compression), and its latency ratio the A/A noise floor.

The search part runs ``autocomp search``'s own study (profile, seeds, TPE, promotion) twice on
ResNet-18 with the same teacher, data, seed and trial budget; the spaces differ only in the rank
values offered on Conv2d. Hypervolume uses the report's reference (teacher, 2 points lower).

    python experiments/bench_decompositions.py --quick             # smoke run, minutes
    python experiments/bench_decompositions.py                     # resnet18 + mobilenet_v2, then the search
    python experiments/bench_decompositions.py --models resnet18 --search-trials 0
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from autocomp.data import DataBundle, DataSpec, load_data
from autocomp.measure import MeasureConfig
from autocomp.methods.cp import CPConfig
from autocomp.methods.cp import macs as cp_macs
from autocomp.methods.lowrank import factorizable, kept_rank, macs_per_output
from autocomp.methods.tucker import Tucker2Config
from autocomp.methods.tucker import macs as tucker_macs
from autocomp.models.layers import compute_layers
from autocomp.pipeline.teacher import prepare_teacher
from autocomp.pipeline.workbench import Workbench
from autocomp.plan import DistillPlan, LayerPlan, Plan

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO / ".." / "shared" / "datasets"
GRID = [round(0.01 * i, 2) for i in range(1, 100)]


def kxk_convs(model: nn.Module) -> dict[str, nn.Conv2d]:
    return {n: m for n, m in compute_layers(model).items()
            if isinstance(m, nn.Conv2d) and m.groups == 1 and m.kernel_size != (1, 1)}


def output_pixels(model: nn.Module, layers: dict[str, nn.Module], shape: tuple[int, ...]) -> dict[str, int]:
    seen: dict[str, int] = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: seen.__setitem__(n, o.shape[-1] * o.shape[-2]))
             for n, m in layers.items()]
    with torch.no_grad():
        model(torch.zeros(1, *shape))
    for h in hooks:
        h.remove()
    return seen


def layer_macs(method: str, layer: nn.Conv2d, value: float) -> int:
    """MACs per output pixel of ``layer`` under a method's value (the layer's own where it stays)."""
    if method == "svd":
        rank = kept_rank(layer, value)
        return macs_per_output(layer, rank) if factorizable(layer, rank) else macs_per_output(layer)
    if method == "tucker2":
        ranks = Tucker2Config(value, value).ranks(layer)
        return tucker_macs(layer, *ranks) if ranks else tucker_macs(layer)
    rank = CPConfig(value).kept(layer)
    return int(cp_macs(layer, rank)) if rank else int(cp_macs(layer))


def matched_value(method: str, convs: dict[str, nn.Conv2d], pixels: dict[str, int], target: float) -> tuple:
    """The value whose summed MACs over ``convs`` come nearest ``1 / target`` of theirs, and that share."""
    full = sum(layer_macs("svd", m, 1.0) * pixels[n] for n, m in convs.items())
    best = min(GRID, key=lambda v: abs(sum(layer_macs(method, m, v) * pixels[n] for n, m in convs.items()) / full
                                       - 1 / target))
    share = sum(layer_macs(method, m, best) * pixels[n] for n, m in convs.items()) / full
    return best, share


def word(method: str, value: float) -> float | str:
    return value if method == "svd" else f"{method}:{value:g}"


def bench_model(spec: str, data: DataBundle, epochs: int, distill: DistillPlan, targets: list[float],
                workdir: Path) -> list[dict]:
    t0 = time.perf_counter()
    key = {"data": "mnist", "train": len(data.train_x), "shape": list(data.input_shape), "bench": "methods"}
    teacher = prepare_teacher(spec, data, None, epochs, 0, key)
    bench = Workbench(teacher, data, MeasureConfig(batch=1, threads=1), workdir=workdir)
    convs = kxk_convs(teacher)
    pixels = output_pixels(teacher, convs, data.input_shape)
    name = spec.removeprefix("torchvision:")
    print(f"  {name}: teacher + workbench {time.perf_counter() - t0:.0f}s; {len(convs)} k x k convs", flush=True)
    rows = [row(name, "KD fine-tune only", "", 1.0, bench.run(Plan(distill=distill), workdir / "control.acz"),
                bench, 0)]
    for target in targets:
        for method in ("svd", "tucker2", "cp"):
            value, share = matched_value(method, convs, pixels, target)
            plan = Plan(layers={n: LayerPlan(rank=word(method, value)) for n in convs}, distill=distill)
            t1 = time.perf_counter()
            result = bench.run(plan, workdir / f"{name}-{method}-{target:g}.acz")
            refused = sum("refused" in v for v in result.decomposed.values())
            rows.append(row(name, f"{method} {target:g}x", str(word(method, value)), share, result, bench, refused))
            print(f"  {name}: {method} {target:g}x ({word(method, value)}) {time.perf_counter() - t1:.0f}s", flush=True)
    return rows


def row(model: str, method: str, value: str, share: float, result, bench: Workbench, refused: int) -> dict:  # noqa: ANN001
    m = result.metrics
    return {"model": model, "method": method, "value": value, "kxk MACs": share, "acc": m.accuracy,
            "drop": bench.teacher_accuracy - m.accuracy, "kB": m.size_bytes / 1e3,
            "size": m.size_bytes / Path(bench.teacher_path).stat().st_size,
            "latency": m.latency_ratio, "low": m.latency_ratio_low, "high": m.latency_ratio_high,
            "decompose s": result.seconds.get("decompose", 0.0), "refused": refused}


def print_table(rows: list[dict]) -> None:
    head = (f"{'model':<13} {'method':<18} {'value':<13} {'kxk MACs':>8} {'acc %':>6} {'drop':>6} {'size kB':>9} "
            f"{'size x':>7} {'latency x (IQR)':>18} {'decomp s':>8} {'refused':>7}")
    print(head)
    print("-" * len(head))
    for r in rows:
        spread = f"{r['latency']:.2f} ({r['low']:.2f}-{r['high']:.2f})"
        print(f"{r['model']:<13} {r['method']:<18} {r['value']:<13} {r['kxk MACs']:>8.3f} {r['acc']:>6.2f} "
              f"{r['drop']:>+6.2f} {r['kB']:>9.1f} {r['size']:>7.3f} {spread:>18} {r['decompose s']:>8.1f} "
              f"{r['refused']:>7}")


def search_arms(data: DataBundle, epochs: int, trials: int, steps: int, lr: float, workdir: Path) -> list[str]:
    """Two studies of ``autocomp search`` on ResNet-18: spatial SVD only, and SVD + Tucker-2 + CP."""
    from autocomp.api import run_search
    from autocomp.config import SearchConfig
    from autocomp.report.frame import trials_frame
    from autocomp.study.hypervolume import hypervolume, reference_point, to_minimization
    from autocomp.study.space import parse_space

    key = {"data": "mnist", "train": len(data.train_x), "shape": list(data.input_shape), "bench": "methods"}
    teacher = prepare_teacher("torchvision:resnet18", data, None, epochs, 0, key)
    ranks = {"svd only": "[1.0, 0.5, 0.25]",
             "svd + tucker2 + cp": "[1.0, 0.5, 0.25, tucker2:0.5, tucker2:0.25, cp:0.5, cp:0.25]"}
    lines = []
    for label, values in ranks.items():
        text = (f"version: 1\nlayers:\n  - type: Conv2d\n    rank: {values}\n    bits: [null, 8]\n"
                f"  - type: Linear\n    bits: [null, 8]\nglobal:\n  steps: {steps}\n  lr: {lr}\n  batch_size: 32\n")
        run = workdir / label.replace(" ", "_").replace("+", "")
        config = SearchConfig(model="python", dataset="python", n_trials=trials, storage=f"sqlite:///{run}.db",
                              study_name="s", run_dir=str(run), baselines=("teacher", "int8", "svd50"), seed=0)
        t0 = time.perf_counter()
        study = run_search(config, teacher=teacher, data=data, space=parse_space(text, f"{label}.yaml"),
                           progress=False, log=lambda s: None)
        frame = trials_frame(study)
        done = frame[(frame["state"] == "COMPLETE") & frame["latency_ms"].notna()]
        base = done[done["baseline"] == "teacher"].iloc[0]
        ref = reference_point({"accuracy": base["accuracy"], "size_bytes": base["size_bytes"],
                               "latency_ms": base["latency_ms"]})
        points = done[["accuracy", "size_bytes", "latency_ms"]].to_numpy(dtype=float)
        scaled, box = to_minimization(points, ref)
        hv = hypervolume(scaled[(scaled <= 1).all(axis=1)], box)
        close = done[done["accuracy"] >= base["accuracy"] - 0.5]
        fastest = close["latency_ms"].min() / base["latency_ms"]
        words = done.filter(like=".rank").apply(lambda c: c.map(lambda v: isinstance(v, str))).any(axis=1).sum()
        lines.append(f"{label:<20} trials {len(done):>3}  hypervolume {hv:.4f}  fastest within 0.5 point "
                     f"{fastest:.2f}x the teacher  trials using tucker2/cp {words:>3}  "
                     f"{time.perf_counter() - t0:.0f}s")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA), help="folder holding MNIST/raw")
    parser.add_argument("--models", default="resnet18,mobilenet_v2", help="torchvision classifiers, comma-separated")
    parser.add_argument("--quick", action="store_true", help="small subsets and short fine-tunes")
    parser.add_argument("--train", type=int, default=None, help="samples (default 10000, quick 600)")
    parser.add_argument("--val", type=int, default=None, help="validation samples (default 2000, quick 200)")
    parser.add_argument("--epochs", type=int, default=None, help="teacher epochs (default 3, quick 2)")
    parser.add_argument("--steps", type=int, default=None, help="fine-tune steps (default 200, quick 8)")
    parser.add_argument("--lr", type=float, default=1e-4, help="fine-tune learning rate")
    parser.add_argument("--targets", default="2,4", help="MAC reductions of the k x k convs")
    parser.add_argument("--search-trials", type=int, default=None, help="trials per search arm (0: none; default 20)")
    parser.add_argument("--search-steps", type=int, default=None, help="fine-tune steps in the search (default 100)")
    args = parser.parse_args(argv)

    def pick(value: int | None, full: int, fast: int) -> int:
        return value if value is not None else (fast if args.quick else full)

    if not (Path(args.data_dir) / "MNIST" / "raw").is_dir():
        raise SystemExit(f"MNIST not found under {args.data_dir} (expected MNIST/raw)")
    from bench_methods import as_rgb32

    torch.set_num_threads(1)
    torch.manual_seed(0)
    start = time.perf_counter()
    train, val, epochs = pick(args.train, 10000, 600), pick(args.val, 2000, 200), pick(args.epochs, 3, 2)
    mnist = load_data(DataSpec(name="mnist", data_dir=args.data_dir, train_samples=train, val_samples=val), seed=0)
    data = as_rgb32(mnist, train, val)
    distill = DistillPlan(temperature=4.0, alpha=0.7, steps=pick(args.steps, 200, 8), lr=args.lr, batch_size=32)
    targets = [float(t) for t in args.targets.split(",")]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-decomp-") as tmp:
        for model in args.models.split(","):
            rows += bench_model(f"torchvision:{model}", data, epochs, distill, targets, Path(tmp))
        trials = pick(args.search_trials, 20, 6)
        search = search_arms(data, epochs, trials, pick(args.search_steps, 100, 4), args.lr, Path(tmp)) \
            if trials else []
    print(f"\nMNIST at 3x32x32, {train} train / {val} val, teacher {epochs} epochs; KD fine-tune {distill.steps} "
          f"steps of 32 at lr {distill.lr:g}; ONNX Runtime on CPU, 1 thread, batch 1; "
          f"{time.perf_counter() - start:.0f}s in all. Latency x: median ratio to the teacher's artifact over "
          "interleaved rounds (interquartile range).\n")
    print_table(rows)
    if search:
        print(f"\nsearch on resnet18 ({trials} trials each, same seed, teacher, data; rank on Conv2d differs):")
        print("\n".join(search))


if __name__ == "__main__":
    main()
