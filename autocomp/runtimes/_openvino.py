"""OpenVINO on the CPU: the artifact's QDQ graph, read by OpenVINO's ONNX frontend, runs int8 where
the graph quantizes (OpenVINO's low-precision transformations turn QDQ into u8/i8 kernels, AMX or
VNNI where the CPU has them).

OpenVINO runs in its own process (``_host``, ``_ov_worker``), never in the caller's: once its CPU
plugin had run in a process, a later fork of that process (DataLoader workers) crashed it with
SIGSEGV. A session here is a proxy; ``run`` and ``describe`` are requests to that process, and
``autocomp.runtimes.beside`` runs a whole timed loop there, so timing pays no round trip per call.

Settings, all explicit and read back in ``describe()``: ``INFERENCE_PRECISION_HINT`` (f32 for
``fp32``: the CPU plugin's default on a CPU with bf16 units is bf16), ``INFERENCE_NUM_THREADS``
= threads, ``NUM_STREAMS`` = 1 and ``PERFORMANCE_HINT`` = LATENCY (one request at a time, as
the protocol times). The IR ``autocomp export --format openvino`` writes records them in its
``runtime_options`` rt_info, but OpenVINO 2026.4 does not apply that hint by itself: compile it
with ``compile_config`` (the card says so and gives the call). Marking ops to keep float32
(``disable_fp16_compression``) was tried: after an IR round trip the CPU plugin kept the convs
in f32 but still ran the FullyConnected layers in bf16, so nothing short of the hint is relied on.

Example::

    session = get_runtime("openvino").open(onnx_bytes, RuntimeOptions(threads=1))
    session.run(None, {"input": x})[0]
    session.describe()["executed"]   # {"Convolution": {"u8": 52}, ...}: this model's kernels' precisions
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from autocomp.runtimes._host import Host, resolve
from autocomp.runtimes.base import Runtime, RuntimeOptions, register

HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
CAPABILITY = {"fp32": "FP32", "bf16": "BF16", "fp16": "FP16"}
HOST = Host("autocomp.runtimes._ov_worker", "OpenVINO")


def compile_config(options: RuntimeOptions = RuntimeOptions()) -> dict[str, Any]:
    """The ``openvino.Core().compile_model(model, "CPU", config)`` config a session runs with."""
    return {"INFERENCE_PRECISION_HINT": HINTS[options.precision], "INFERENCE_NUM_THREADS": options.threads,
            "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}


@lru_cache(maxsize=1)
def _capabilities() -> tuple[str, ...]:
    return HOST.request("capabilities")


class OpenVINOSession:
    """A session compiled and run in OpenVINO's process; ``run`` as ONNX Runtime's. Pickled (sent
    to that process, e.g. by ``beside``), it arrives there as the compiled session itself."""

    def __init__(self, handle: int, host: Host = HOST) -> None:
        self.host, self._handle, self._generation = host, handle, host.generation

    def run(self, output_names: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.host.request("run", self, output_names, feeds)

    def describe(self) -> dict[str, Any]:
        return self.host.request("describe", self)

    def __reduce__(self) -> tuple:
        return resolve, (self._handle,)

    def __del__(self) -> None:
        self.host.drop(self._handle, self._generation)


@register
class OpenVINO(Runtime):
    name = "openvino"
    label = "OpenVINO"
    package = "openvino"
    extra = "openvino"
    precisions = ("fp32", "bf16", "fp16")
    formats = {"openvino": ".xml"}

    def missing(self, options: RuntimeOptions = RuntimeOptions()) -> str | None:
        problem = super().missing(RuntimeOptions(precision="fp32"))  # installed at all?
        if problem:
            return problem
        capabilities = _capabilities()
        if CAPABILITY.get(options.precision) not in capabilities:
            return (f"runtime openvino: precision {options.precision} is not offered by OpenVINO's CPU plugin on "
                    f"this CPU (it offers {', '.join(c for c in capabilities if c in CAPABILITY.values())})")
        return None

    def version(self) -> str:
        return HOST.request("version")

    def open(self, model: bytes, options: RuntimeOptions = RuntimeOptions()) -> OpenVINOSession:
        return OpenVINOSession(HOST.request("open", model, options))

    def save(self, model: bytes, out: Path, fmt: str = "openvino",
             options: RuntimeOptions = RuntimeOptions()) -> list[Path]:
        """An OpenVINO IR (``out`` = ``NAME.xml``, weights beside it in ``NAME.bin``), float
        weights kept float32 (``save_model`` would compress them to fp16 by default)."""
        if fmt not in self.formats:
            return super().save(model, out, fmt, options)
        return HOST.request("save", model, Path(out), options.precision)

    def open_file(self, path: Path, options: RuntimeOptions | None = RuntimeOptions()) -> OpenVINOSession:
        """A session over a written IR: with ``options``' settings, or OpenVINO's defaults (None)."""
        return OpenVINOSession(HOST.request("open_file", Path(path), options))

    def load_call(self, path: Path, options: RuntimeOptions = RuntimeOptions()) -> str:
        return f"openvino.Core().compile_model({str(path)!r}, 'CPU', {compile_config(options)!r})"
