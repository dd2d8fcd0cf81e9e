"""The real-workload pipeline (issue 11): streamed mixed-size JPEGs at 224 px, torchvision models.

Phases (each prints its numbers and appends them to ``OUT/results.json``):

``teacher``  trains a torchvision model briefly with a plain, hand-written torchvision loop
             (no pretrained weights exist offline) and saves its state dict: the checkpoint the
             searches start from.
``eval``     the user's own evaluation of that checkpoint (torchvision transforms + plain
             PyTorch) next to the teacher accuracy autocomp records on the same validation images.
``memory``   ``autocomp search`` in a subprocess on 2,000 and on 20,000 training images (same
             validation subset, same trials): peak memory of the whole process tree (the search
             and its DataLoader workers), sampled from /proc, and seconds per trial.
``speed``    fine-tune images/s of autocomp's loop (``Workbench.finetune``: streamed, augmented,
             teacher logits on the fly) against a plain hand-written torchvision KD loop on the
             same images, transform, student, batch size and device; interleaved rounds in
             shuffled order, medians with their spread.
``export``   ``autocomp export --epochs E`` of a searched point: search-time vs final accuracy.

The data: ``experiments/make_canvas_digits.py`` (MNIST digits on random 48-400 px canvases);
nothing here downloads anything. Example (see experiments/README.md for the runs behind the
numbers)::

    python experiments/bench_data.py teacher --model mobilenet_v3_large
    python experiments/bench_data.py memory --model mobilenet_v3_large --steps 10
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torchvision.transforms import v2

ROOT = Path(__file__).resolve().parents[1]
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet's, as a user's recipe would have


def plain_transforms(size: int = 224, resize: int = 256) -> tuple[v2.Compose, v2.Compose]:
    """What a user writes by hand: light random-resized crop + flip for training, resize + center crop for eval."""
    to_float = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)]
    train = v2.Compose([v2.RandomResizedCrop(size, scale=(0.35, 1.0), antialias=True), v2.RandomHorizontalFlip(),
                        *to_float])
    return train, v2.Compose([v2.Resize(resize, antialias=True), v2.CenterCrop(size), *to_float])


def user_eval_transform(size: int = 224, resize: int = 256) -> torchvision.transforms.Compose:
    """The classic torchvision (v1) eval transform a user evaluates with."""
    from torchvision import transforms as T

    return T.Compose([T.Resize(resize), T.CenterCrop(size), T.ToTensor(), T.Normalize(MEAN, STD)])


def loader(folder: Path, transform, batch: int, workers: int, shuffle: bool, n: int | None = None,  # noqa: ANN001
           seed: int = 0, pin: bool = False) -> torch.utils.data.DataLoader:
    ds = torchvision.datasets.ImageFolder(str(folder), transform)
    if n is not None and n < len(ds):
        idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n].tolist()
        ds = torch.utils.data.Subset(ds, idx)
    return torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=shuffle, num_workers=workers,
                                       generator=torch.Generator().manual_seed(seed), persistent_workers=False,
                                       pin_memory=pin)


def record(out: Path, key: str, value: dict) -> None:
    path = out / "results.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[key] = value
    path.write_text(json.dumps(data, indent=2))
    print(f"[{key}] {json.dumps(value)}", flush=True)


# -- teacher: a plain training loop ---------------------------------------------------------------
def train_teacher(args: argparse.Namespace) -> None:
    """Progressive resizing (fast.ai's trick): learn the digits at a low resolution, where a CPU
    step is cheap, then adapt at higher ones, ending at 224 px (a 64-px model alone scores ~12 %
    at 224: the scale is part of what it learned)."""
    torch.manual_seed(0)
    model = torchvision.models.get_model(args.model, num_classes=10)
    start, seen, log = time.perf_counter(), 0, []
    for stage in filter(None, args.stages.split(",")):
        size, n, epochs = (int(v) for v in stage.split(":"))
        augmented, plain = plain_transforms(size, int(round(size * 256 / 224)))
        train_t = augmented if args.teacher_augment == "light" else plain
        data = loader(Path(args.data) / "train", train_t, args.batch, args.workers, True, n, seed=size)
        opt = torch.optim.Adam(model.parameters(), lr=args.lr)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=epochs * len(data))
        model.train()
        for epoch in range(epochs):
            for i, (x, y) in enumerate(data):
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                seen += len(x)
                if i % 20 == 0:
                    print(f"{size}px epoch {epoch} step {i}/{len(data)} loss {loss.item():.3f} "
                          f"{time.perf_counter() - start:.0f}s", flush=True)
        log.append({"size": size, "images": n, "epochs": epochs, "augment": args.teacher_augment})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not log:  # no stages: recalibrate the saved checkpoint
        model.load_state_dict(torch.load(out / f"{args.model}.pt", weights_only=True))
    before = user_accuracy(model, Path(args.data) / "val", args.val, args.workers)
    recalibrate_bn(model, Path(args.data) / "train", args.calibrate, args.workers)
    torch.save(model.state_dict(), out / f"{args.model}.pt")
    acc = user_accuracy(model, Path(args.data) / "val", args.val, args.workers)
    record(out, f"teacher/{args.model}", {"stages": log, "seconds": round(time.perf_counter() - start),
                                          "val_accuracy_224_before_bn_recalibration": before,
                                          "val_accuracy_224": acc, "val_images": args.val})


@torch.no_grad()
def recalibrate_bn(model: torch.nn.Module, folder: Path, n: int, workers: int) -> None:
    """BatchNorm running statistics recomputed at 224 px: after a change of resolution they lag
    (MobileNetV3's momentum is 0.01), and eval-mode accuracy with stale ones fell to chance."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the pass
    model.train()
    for x, _ in loader(folder, plain_transforms()[1], 32, workers, True, n, seed=1):
        model(x)
    for m, momentum in zip(bns, saved, strict=True):
        m.momentum = momentum
    model.eval()


@torch.no_grad()
def user_accuracy(model: torch.nn.Module, folder: Path, n: int | None, workers: int, seed: int = 0) -> float:
    """Top-1 the way a user checks it: torchvision (v1) transforms, plain PyTorch, fp32."""
    model.eval()
    data = loader(folder, user_eval_transform(), 64, workers, False, n, seed)
    correct = total = 0
    for x, y in data:
        correct += int((model(x).argmax(1) == y).sum())
        total += len(y)
    return 100.0 * correct / total


# -- search settings shared by the phases ---------------------------------------------------------
def search_args(args: argparse.Namespace, data: str, run: Path) -> list[str]:
    return ["search", "--model", f"torchvision:{args.model}", "--checkpoint", str(Path(args.out) / f"{args.model}.pt"),
            "--dataset", data, "--image-size", "224", "--resize", "256", "--mean", ",".join(map(str, MEAN)),
            "--std", ",".join(map(str, STD)), "--augment", "light", "--val-samples", str(args.val),
            "--space", args.space, "--n-trials", str(args.trials), "--baselines", args.baselines,
            "--run-dir", str(run), "--study-name", run.name, "--workers", str(args.workers),
            "--train-threads", str(args.threads), "--device", args.device, "--no-progress", "--seed", "0"]


def space_file(args: argparse.Namespace) -> str:
    """The uniform space with the benchmark's brief fine-tune (steps, batch) written in."""
    import yaml

    from autocomp.study.space import load_space

    text = load_space("uniform").text
    spec = yaml.safe_load(text)
    # lr 1e-4: at the space's 1e-3 a brief fine-tune wrecked the trained resnet18 (29 % after 5 steps).
    spec["global"].update({"steps": args.steps, "batch_size": args.batch, "lr": 1e-4})
    path = Path(args.out) / f"space-{args.steps}x{args.batch}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(path)


def tree_memory(pid: int) -> tuple[int, int]:
    """(sum of RSS, sum of PSS) in bytes over ``pid`` and its descendants, from /proc."""
    pids, frontier = {pid}, [pid]
    while frontier:
        p = frontier.pop()
        try:
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        for c in map(int, children):
            if c not in pids:
                pids.add(c)
                frontier.append(c)
    rss = pss = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
        except OSError:
            continue
    return rss, pss


def run_measured(argv: list[str], env: dict) -> dict:
    """Run ``autocomp ARGV`` as a subprocess, sampling its process tree's memory every 0.2 s."""
    proc = subprocess.Popen([sys.executable, "-m", "autocomp.cli", *argv], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = {"rss": 0, "pss": 0, "main_rss": 0}

    def sample() -> None:
        while proc.poll() is None:
            rss, pss = tree_memory(proc.pid)
            main, _ = tree_memory_single(proc.pid)
            peak["rss"], peak["pss"], peak["main_rss"] = max(peak["rss"], rss), max(peak["pss"], pss), \
                max(peak["main_rss"], main)
            time.sleep(0.2)

    def tree_memory_single(p: int) -> tuple[int, int]:
        try:
            text = Path(f"/proc/{p}/smaps_rollup").read_text()
        except OSError:
            return 0, 0
        rss = next((int(s.split()[1]) * 1024 for s in text.splitlines() if s.startswith("Rss:")), 0)
        return rss, 0

    t = threading.Thread(target=sample, daemon=True)
    start = time.perf_counter()
    t.start()
    output, _ = proc.communicate()
    t.join()
    if proc.returncode != 0:
        raise SystemExit(f"autocomp {' '.join(argv)} failed ({proc.returncode}):\n{output[-3000:]}")
    return {"wall_s": time.perf_counter() - start, "output": output, **peak}


def study_numbers(run: Path) -> dict:
    import optuna

    from autocomp.study.records import read_study, read_trial

    study = optuna.load_study(study_name=run.name, storage=f"sqlite:///{run / 'study.db'}")
    done = [read_trial(t) for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    record = read_study(study)
    per_trial = [t.seconds["total"] for t in done if t.baseline != "teacher"]
    return {"teacher_accuracy": record.teacher.accuracy, "trials_complete": len(done),
            "seconds_per_trial": [round(s, 1) for s in per_trial],
            "finetune_s": [round(t.seconds["finetune"], 1) for t in done],
            "measure_s": [round(t.seconds["measure"], 1) for t in done],
            "preprocessing": record.preprocessing}


# -- memory: 2,000 vs 20,000 training images -------------------------------------------------------
def memory(args: argparse.Namespace) -> None:
    out = Path(args.out)
    args.space = space_file(args)
    env = {**os.environ, "AUTOCOMP_CACHE": str(out / "cache"), "OMP_WAIT_POLICY": "PASSIVE"}
    rows = {}
    for label, data in (("2k", args.small), ("20k", args.large)):
        run = out / f"mem-{args.model}-{label}"
        if run.exists():
            raise SystemExit(f"{run} exists: remove it or pick another --out")
        m = run_measured(search_args(args, data, run), env)
        numbers = {k: v for k, v in study_numbers(run).items() if k != "preprocessing"}
        rows[label] = {"peak_tree_rss_mb": round(m["rss"] / 2**20), "peak_tree_pss_mb": round(m["pss"] / 2**20),
                       "peak_main_rss_mb": round(m["main_rss"] / 2**20), "wall_s": round(m["wall_s"]), **numbers,
                       "trials_per_hour": round(3600 / statistics.median(numbers["seconds_per_trial"]), 1)
                       if numbers["seconds_per_trial"] else None}
        print(f"{label}: {rows[label]}", flush=True)
    ratio = rows["20k"]["peak_tree_pss_mb"] / rows["2k"]["peak_tree_pss_mb"]
    record(out, f"memory/{args.model}", {**rows, "pss_ratio_20k_over_2k": round(ratio, 3),
                                         "steps": args.steps, "batch": args.batch, "trials": args.trials,
                                         "device": args.device})


# -- eval: the user's own evaluation vs the study's teacher accuracy -------------------------------
def evaluate(args: argparse.Namespace) -> None:
    out = Path(args.out)
    model = torchvision.models.get_model(args.model, num_classes=10)
    model.load_state_dict(torch.load(out / f"{args.model}.pt", weights_only=True))
    run = out / args.study
    study = study_numbers(run)
    # The study's validation images: the seeded subset autocomp took (randperm(seed 0)[:val]).
    user = user_accuracy(model, Path(args.large) / "val", args.val, args.workers)
    record(out, f"eval/{args.model}", {"study_teacher_accuracy": study["teacher_accuracy"], "user_accuracy": user,
                                       "difference_points": round(study["teacher_accuracy"] - user, 4),
                                       "val_images": args.val})


# -- speed: autocomp's fine-tune vs a hand-written torchvision KD loop ------------------------------
def speed(args: argparse.Namespace) -> None:
    from autocomp.config import SearchConfig
    from autocomp.pipeline.compress import apply
    from autocomp.pipeline.setup import prepare
    from autocomp.pipeline.workbench import Workbench
    from autocomp.plan import DistillPlan, Plan

    out = Path(args.out)
    torch.set_num_threads(args.threads)
    os.environ["AUTOCOMP_CACHE"] = str(out / "cache")
    config = SearchConfig(model=f"torchvision:{args.model}", checkpoint=str(out / f"{args.model}.pt"),
                          dataset=args.large, image_size=224, resize=256, mean=MEAN, std=STD, augment="light",
                          val_samples=64, workers=args.workers, train_threads=args.threads, device=args.device)
    teacher, data = prepare(config, log=lambda s: None)
    bench = Workbench(teacher, data, device=args.device)
    cuda = args.device.startswith("cuda")
    plain_teacher = copy.deepcopy(teacher).to(args.device).eval()
    plan = Plan(distill=DistillPlan(steps=args.steps, batch_size=args.batch, lr=1e-4))
    student_base = apply(teacher, plan, bench.example)
    train_t, _ = plain_transforms()
    plain_loader = loader(Path(args.large) / "train", train_t, args.batch, args.workers, True, pin=cuda)

    def clock() -> float:  # CUDA runs asynchronously: a time is only taken once the GPU has caught up
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def ours() -> float:
        student = apply(teacher, plan, bench.example)
        start = clock()
        bench.finetune(student, plan)
        return args.steps * args.batch / (clock() - start)

    def plain() -> float:  # the loop a user writes: fp32, no autocast, no channels-last
        student = copy.deepcopy(student_base).to(args.device).train()
        opt = torch.optim.Adam(student.parameters(), lr=1e-4)
        start = clock()
        it = iter(plain_loader)
        for _ in range(args.steps):
            x, y = next(it)
            x, y = x.to(args.device, non_blocking=True), y.to(args.device, non_blocking=True)
            with torch.no_grad():
                t = plain_teacher(x)
            s = student(x)
            loss = 0.5 * F.kl_div(F.log_softmax(s / 4, 1), F.log_softmax(t / 4, 1), reduction="batchmean",
                                  log_target=True) * 16 + 0.5 * F.cross_entropy(s, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        del it
        return args.steps * args.batch / (clock() - start)

    rng = random.Random(0)
    results: dict[str, list[float]] = {"autocomp": [], "plain": []}
    for r in range(args.rounds):
        order = [("autocomp", ours), ("plain", plain)]
        rng.shuffle(order)
        for name, fn in order:
            results[name].append(fn())
        print(f"round {r}: " + ", ".join(f"{k} {v[-1]:.2f} img/s" for k, v in results.items()), flush=True)
    med = {k: statistics.median(v) for k, v in results.items()}
    ratios = [a / p for a, p in zip(results["autocomp"], results["plain"], strict=True)]
    record(out, f"speed/{args.model}", {
        "autocomp_img_s": [round(v, 2) for v in results["autocomp"]],
        "plain_img_s": [round(v, 2) for v in results["plain"]],
        "median_autocomp": round(med["autocomp"], 2), "median_plain": round(med["plain"], 2),
        "median_ratio": round(statistics.median(ratios), 3), "ratio_min": round(min(ratios), 3),
        "ratio_max": round(max(ratios), 3), "steps": args.steps, "batch": args.batch, "threads": args.threads,
        "workers": args.workers, "device": args.device})


# -- export: search-time vs final accuracy ---------------------------------------------------------
def export_longer(args: argparse.Namespace) -> None:
    import optuna

    from autocomp.study.records import trial_baseline

    out = Path(args.out)
    run = out / args.study
    storage = f"sqlite:///{run / 'study.db'}"
    study = optuna.load_study(study_name=run.name, storage=storage)
    trial = args.trial if args.trial is not None else max(
        (t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and trial_baseline(t) != "teacher"),
        key=lambda t: t.values[0]).number
    target = out / f"{run.name}-t{trial}-e{args.epochs:g}.acz"
    env = {**os.environ, "AUTOCOMP_CACHE": str(out / "cache"), "OMP_WAIT_POLICY": "PASSIVE"}
    m = run_measured(["export", "--storage", storage, "--study-name", run.name, "--trial", str(trial),
                      "--out", str(target), "--epochs", str(args.epochs), "--no-progress"], env)
    card = json.loads(Path(f"{target}.card.json").read_text())
    acc = card["accuracy"]
    record(out, f"export/{run.name}", {"trial": trial, "epochs": args.epochs, "wall_s": round(m["wall_s"]),
                                       "search_time": acc["search_time"], "final": acc["final"],
                                       "final_on_search_subset": acc.get("final_on_search_subset"),
                                       "peak_tree_pss_mb": round(m["pss"] / 2**20)})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("phase", choices=["teacher", "eval", "memory", "speed", "export"])
    p.add_argument("--model", default="mobilenet_v3_large")
    p.add_argument("--small", default="runs/canvas2k", help="ImageFolder with 2,000 training images")
    p.add_argument("--large", default="runs/canvas20k", help="ImageFolder with 20,000 training images")
    p.add_argument("--data", default="runs/canvas20k", help="teacher phase: the ImageFolder to train on")
    p.add_argument("--out", default="runs/bench_data")
    p.add_argument("--teacher-augment", choices=["none", "light"], default="none",
                   help="teacher phase: random-resized crops + flips cost more steps than the CPU has here")
    p.add_argument("--calibrate", type=int, default=640, help="teacher phase: images for the BatchNorm statistics")
    p.add_argument("--stages", default="64:3000:2,128:3000:1,224:1000:1",
                   help="teacher phase: SIZE:IMAGES:EPOCHS, comma-separated, trained in order")
    p.add_argument("--val", type=int, default=500, help="validation images (search-time subset, user eval)")
    p.add_argument("--epochs", type=float, default=2)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=10, help="fine-tune steps per trial / per timed run")
    p.add_argument("--trials", type=int, default=2)
    p.add_argument("--baselines", default="teacher,int8")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=2, help="torch threads for training")
    p.add_argument("--device", default="cpu", help="memory/speed phases: where to fine-tune (cpu, cuda[:N])")
    p.add_argument("--study", default=None, help="eval/export phases: the run directory name under --out")
    p.add_argument("--trial", type=int, default=None)
    args = p.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.phase == "teacher":
        torch.set_num_threads(args.threads)
        train_teacher(args)
    else:
        {"eval": evaluate, "memory": memory, "speed": speed, "export": export_longer}[args.phase](args)


if __name__ == "__main__":
    main()
