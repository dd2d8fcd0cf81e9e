"""The timing protocol as one self-contained file: what runs on a measuring device.

``--measure-on ssh://host`` copies this file, and nothing else of autocomp, into a private
temporary folder on the device and runs it with ``python3``. It needs the standard library,
numpy and the runtime (``onnxruntime``, or ``openvino``); it executes nothing it is sent but ONNX
graphs in that runtime. Locally, ``autocomp.measure.latency`` times with the same
``time_rounds``, so a device and this machine follow one protocol by construction.

Commands (one JSON object on stdout each; an error is ``{"error": "one line"}`` and exit 2)::

    python3 device_timing.py identify onnxruntime      # the device: uname, CPU, cores, runtime
    python3 device_timing.py time < request.json       # rounds of the named ONNX files

A ``time`` request: ``{"runtime", "threads", "precision", "models": [file names in this folder],
"files": {name: base64 bytes to write first}, "input": {"shape", "base64"} (float32, C order),
"kw": time_rounds' keyword arguments}``. The reply: ``{"samples": [[seconds, ...] per model],
"per_round": [[seconds per model] per round], "window": [start, end]}`` (wall clock). Timings of
one user on one device take turns through a lock file in its temporary folder.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import platform
import sys
import tempfile
import time

try:
    import numpy as np
except ImportError:  # said in one line by main()
    np = None

# CPU features that decide which kernels a runtime picks (int8 dot products, bf16, AMX tiles).
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_int8",
             "amx_bf16", "amx_fp16", "asimddp", "sve", "i8mm")


def time_rounds(fns, warmup=5, min_runs=30, min_seconds=0.2, max_runs=2000, round_size=1, seed=0):  # noqa: ANN001, ANN201
    """Time each zero-argument callable: ``warmup`` untimed calls each, then rounds of
    ``round_size`` calls each in an order shuffled per round by ``numpy.random.default_rng(seed)``,
    until every callable ran ``min_runs`` times and ``min_seconds`` passed, or ``max_runs``.
    Returns (every call's seconds per callable, each round's median per callable)."""
    rng = np.random.default_rng(seed)
    for fn in fns:
        for _ in range(warmup):
            fn()
    samples = [[] for _ in fns]
    rounds = []
    start = time.perf_counter()
    while True:
        row = [0.0] * len(fns)
        for i in rng.permutation(len(fns)):
            fn, out = fns[i], []
            for _ in range(round_size):
                t0 = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t0)
            samples[i] += out
            row[i] = float(np.median(out))
        rounds.append(row)
        n = len(samples[0])
        if n >= max_runs or (n >= min_runs and time.perf_counter() - start >= min_seconds):
            return samples, rounds


class Refused(Exception):
    """What the device cannot do, in one line."""


def cpu_record():  # noqa: ANN201
    """The CPU as its OS reports it: model name, architecture and the ISA flags that pick kernels
    (``autocomp.runtimes.host_cpu`` is this, for the machine autocomp runs on)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and value.strip():
                    name = value.strip()
                elif key in ("flags", "Features"):
                    flags |= set(value.split())
                if key in ("flags", "Features") and name:
                    break
    except OSError:
        pass
    return {"cpu": name, "arch": platform.machine(), "isa": [f for f in ISA_FLAGS if f in flags]}


def identify(runtime):  # noqa: ANN001, ANN201
    """The device as a study records it: never a path, a user name or a credential."""
    try:
        module = __import__(runtime)
    except ImportError:
        raise Refused(f"{runtime} is not installed on the device (pip install {runtime} numpy)") from None
    uname = platform.uname()
    return dict(cpu_record(), system=uname.system, release=uname.release, machine=uname.machine, node=uname.node,
                cores=os.cpu_count(), python=platform.python_version(), numpy=np.__version__, runtime=runtime,
                version=getattr(module, "__version__", None) or module.get_version())


def _open(runtime, path, threads, precision):  # noqa: ANN001, ANN202
    if runtime == "onnxruntime":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {"input": x})
    if runtime == "openvino":
        import openvino as ov

        hint = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}[precision]
        compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": hint, "NUM_STREAMS": 1,
                                                         "INFERENCE_NUM_THREADS": threads,
                                                         "PERFORMANCE_HINT": "LATENCY"})
        request = compiled.create_infer_request()
        return lambda x: request.infer({0: x})
    raise Refused(f"runtime {runtime} cannot time on a device (onnxruntime, openvino)")
    # The settings are autocomp.runtimes' own (_onnxruntime.open, _openvino.compile_config).


def _load(request, folder):  # noqa: ANN001, ANN202
    """Write the request's new files into ``folder``; the input and a runner per model."""
    for name, data in request.get("files", {}).items():
        if os.path.basename(name) != name or not name.endswith(".onnx"):
            raise Refused(f"refusing file name {name!r}")
        with open(os.path.join(folder, name), "wb") as f:
            f.write(base64.b64decode(data))
    shape = tuple(request["input"]["shape"])
    x = np.frombuffer(base64.b64decode(request["input"]["base64"]), dtype=np.float32).reshape(shape).copy()
    runners = []
    for name in request["models"]:
        path = os.path.join(folder, os.path.basename(name))
        if not os.path.isfile(path):
            raise Refused(f"model {name} is not on the device")
        runners.append(_open(request["runtime"], path, int(request["threads"]), request.get("precision", "fp32")))
    return x, runners


@contextlib.contextmanager
def _turn():  # noqa: ANN202
    """Held while running: workers sharing this device take turns, so no timing overlaps another's work."""
    import fcntl

    with open(os.path.join(tempfile.gettempdir(), f"autocomp-device-{os.getuid()}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def time_request(request, folder):  # noqa: ANN001, ANN201
    """Open every model of the request, time them interleaved."""
    x, runners = _load(request, folder)
    with _turn():
        start = time.time()
        samples, rounds = time_rounds([lambda r=r: r(x) for r in runners], **request["kw"])
        return {"samples": samples, "per_round": rounds, "window": [start, time.time()]}


def run_request(request, folder):  # noqa: ANN001, ANN201
    """The first output of the request's one model on its input (``--device-accuracy``)."""
    x, (runner,) = _load(request, folder)
    with _turn():
        out = runner(x)
    y = np.ascontiguousarray(out[0] if isinstance(out, (list, tuple)) else next(iter(out.values())),
                             dtype=np.float32)
    return {"shape": list(y.shape), "base64": base64.b64encode(y.tobytes()).decode()}


def main(argv):  # noqa: ANN001, ANN201
    try:
        if np is None:
            raise Refused("numpy is not installed on the device (pip install numpy onnxruntime)")
        if argv[:1] == ["identify"] and len(argv) == 2:
            out = identify(argv[1])
        elif argv in (["time"], ["run"]):
            handle = time_request if argv == ["time"] else run_request
            out = handle(json.load(sys.stdin), os.path.dirname(os.path.abspath(__file__)))
        else:
            raise Refused("usage: device_timing.py identify RUNTIME | time < request.json | run < request.json")
    except Refused as exc:
        print(json.dumps({"error": str(exc)}))
        return 2
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
