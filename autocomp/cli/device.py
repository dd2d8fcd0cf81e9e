"""``autocomp device check ssh://[user@]host[:port]``: what a measuring device has, and its noise.

It prints the device (system, CPU and ISA flags, cores, Python, numpy), each runtime it can time
with and its version, and a few seconds of an A/A timing (one small model against itself, in
the protocol's shuffled rounds) on the first runtime it has: the spread is the device's noise
floor, the smallest difference a study timed there can call real. Exit 0 when the device can
measure a study (``--measure-on``); otherwise one line and exit 2.
"""

from __future__ import annotations

import argparse

from autocomp.errors import AutocompError

RUNTIMES = ("onnxruntime", "openvino")


def add_parser(sub: argparse._SubParsersAction) -> None:
    dp = sub.add_parser("device", help="check a measuring device over SSH (for search --measure-on)")
    dsub = dp.add_subparsers(dest="device_command", required=True, metavar="ACTION")
    check = dsub.add_parser("check", help="the device's Python, runtimes, CPU and an A/A timing's noise floor")
    check.add_argument("url", help="ssh://[user@]host[:port] (the system ssh client; keys, agent, ~/.ssh/config)")
    check.add_argument("--seconds", type=float, default=2.0, help="seconds of the A/A timing (default 2)")
    check.add_argument("--threads", type=int, default=1, help="the runtime's intra-op threads (default 1)")
    dp.set_defaults(func=run)


def _small_model() -> bytes:
    """The digits CNN (random weights) as ONNX: a small model of the kind the demo searches."""
    import io

    import torch

    from autocomp.models.zoo import digits_cnn

    torch.manual_seed(0)
    buf = io.BytesIO()
    torch.onnx.export(digits_cnn().eval(), (torch.zeros(1, 1, 8, 8),), buf, input_names=["input"],
                      output_names=["logits"], dynamo=False)
    return buf.getvalue()


def run(args: argparse.Namespace) -> int:
    from autocomp.runtimes import RuntimeOptions, require
    from autocomp.runtimes.remote import DeviceError, RemoteDevice, RemoteSession, parse_device

    url = parse_device(args.url)
    if args.seconds <= 0 or args.threads < 1:
        raise AutocompError("--seconds must be > 0 and --threads >= 1")
    options = RuntimeOptions(threads=args.threads)
    found, devices, problems = {}, [], []
    try:
        for runtime in RUNTIMES:
            try:
                devices.append(RemoteDevice(url, runtime, options).open())
                found[runtime] = devices[-1].identity
            except DeviceError as exc:
                if "is not installed on the device" not in str(exc):
                    raise
                problems.append(str(exc).split(": ", 1)[1])
        if not found:
            raise AutocompError(f"device {url} cannot measure: {'; '.join(problems)}")
        me = next(iter(found.values()))
        print(f"device {url}: {me['system']} {me['release']} {me['machine']}, {me['cpu']}"
              f"{' (' + ', '.join(me['isa']) + ')' if me['isa'] else ''}, {me['cores']} cores, "
              f"Python {me['python']}, numpy {me['numpy']}")
        for runtime in RUNTIMES:
            print(f"  {runtime} {found[runtime]['version']}: can time" if runtime in found else
                  f"  {runtime}: {next(p for p in problems if p.startswith(runtime))}")
        device, model = devices[0], _small_model()
        local = require("onnxruntime").open(model, options)
        from autocomp.measure.latency import paired_rounds

        pair = [RemoteSession(local, model, device), RemoteSession(local, model, device)]
        rounds = paired_rounds(pair, (1, 8, 8), min_runs=30, min_seconds=args.seconds)
        aa = rounds.ratio(0, 1)
        ms = rounds.timings()[0].median_ms
        print(f"  A/A timing, digits CNN on {device.runtime}, {args.threads} thread(s), {aa.rounds} rounds: "
              f"{ms:.4f} ms, ratio {aa.median:.3f} (spread {aa.low:.3f}-{aa.high:.3f}): differences inside "
              "such a spread are noise there")
        print(f"it can measure a study: autocomp search --measure-on {url}"
              + ("" if device.runtime == "onnxruntime" else f" --runtime {device.runtime}"))
    finally:
        for d in devices:
            d.close()
    return 0
