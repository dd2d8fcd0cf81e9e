"""Two devices that differ, one search each: does the front follow the device it was timed on?

The same study (the default digits demo: same space, seed, trials, baselines) runs twice with
``--measure-on``, once per device. "Devices" are given as ``URL RUNTIME[:THREADS]``; by default
both are a loopback sshd on this machine (``tests/loopback_sshd.py``), one timing with ONNX
Runtime and one with OpenVINO, so what differs is the runtime the device runs, which is
what a different board changes too: the kernels int8, channel cuts and factorized layers run on.

Printed per device: the latency ratio to the teacher of each uniform baseline (median and
spread, from that study's own trials), whether it is on the front, the front's size and the
recommended trial with its settings. A plan whose ratios' spreads do not overlap between the
two devices is one where the devices disagree; the fronts differ there.

    python experiments/bench_device_fronts.py                   # ~5 minutes on 2 cores
    python experiments/bench_device_fronts.py --trials 30 \\
        --devices "ssh://pi@raspberrypi onnxruntime" "ssh://jetson onnxruntime:4"
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from autocomp.api import run_search
from autocomp.config import SearchConfig
from autocomp.report.frame import trials_frame
from autocomp.report.recommend import recommend
from autocomp.runtimes.remote import close_devices


def study(url: str, runtime: str, threads: int, trials: int, folder: Path) -> dict:
    config = SearchConfig(run_dir=str(folder), n_trials=trials, measure_on=url, runtime=runtime, threads=threads,
                          seed=0, train_threads=1)
    frame = trials_frame(run_search(config, progress=False, log=lambda s: None))
    done = frame[frame["state"] == "COMPLETE"]
    base = {r["baseline"]: r for r in done.to_dict("records") if r["baseline"]}
    teacher = base["teacher"]
    rec = recommend(frame, teacher["accuracy"], 1.0, prefer="size")
    best = None if rec.trial is None else done[done["trial"] == rec.trial].iloc[0].to_dict()
    return {"baselines": base, "front": int(done["pareto"].sum()), "complete": len(done), "recommended": best}


def spread(row: dict) -> tuple[float, float, float]:
    return row["latency_ratio_measured"], row["latency_ratio_low"], row["latency_ratio_high"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", nargs=2, default=None, metavar="'URL RUNTIME[:THREADS]'",
                        help="two devices (default: a loopback sshd timing onnxruntime, then openvino)")
    parser.add_argument("--trials", type=int, default=24, help="trials per study (default 24)")
    args = parser.parse_args()
    server = None
    with tempfile.TemporaryDirectory() as tmp:
        devices = args.devices
        if devices is None:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
            from loopback_sshd import start_for_this_process

            server = start_for_this_process(Path(tmp) / "sshd")
            devices = [f"{server.url} onnxruntime", f"{server.url} openvino"]
        results = {}
        try:
            for i, spec in enumerate(devices):
                url, runtime = spec.split()
                runtime, _, threads = runtime.partition(":")
                results[spec] = study(url, runtime, int(threads or 1), args.trials, Path(tmp) / f"run{i}")
        finally:
            close_devices()
            if server is not None:
                server.stop()
    a, b = results.values()
    print(f"the default digits study, {args.trials} trials, seed 0, on each device"
          f"{' (a loopback sshd on this machine)' if server else ''}\n")
    print("| baseline | " + " | ".join(f"{d}: latency x (IQR), on front" for d in results) + " | devices agree |")
    print("|---|---|---|---|")
    for name in a["baselines"]:
        if name == "teacher" or name not in b["baselines"]:
            continue
        cells, spans = [], []
        for r in (a, b):
            row = r["baselines"][name]
            med, low, high = spread(row)
            spans.append((low, high))
            cells.append(f"{med:.2f} ({low:.2f}-{high:.2f}), {'yes' if row['pareto'] else 'no'}")
        agree = spans[0][0] <= spans[1][1] and spans[1][0] <= spans[0][1]
        print(f"| {name} | " + " | ".join(cells) + f" | {'yes' if agree else 'no'} |")
    for spec, r in results.items():
        best = r["recommended"]
        what = "none within 1 point" if best is None else (
            f"trial {int(best['trial'])} ({best['baseline'] or 'searched'}), {best['size_bytes'] / 1e3:.1f} kB, "
            f"latency x {best['latency_ratio_measured']:.2f}, accuracy {best['accuracy']:.2f} %")
        print(f"\n{spec}: {r['complete']} complete, {r['front']} on the front; recommended: {what}")


if __name__ == "__main__":
    main()
