"""The runtime interface: one registered implementation per runtime, one session shape for all.

A runtime turns the artifact's plain ONNX graph (QDQ int8, as ``autocomp.artifact.to_bytes``
expands it) into a session used exactly like an ONNX Runtime session:
``session.run(None, {"input": x})[0]`` gives the logits of the float32 batch ``x``. That is all
the measurement protocol (``autocomp.measure``) calls, so accuracy, latency, the teacher's
reference and the per-layer costs are measured on whichever runtime the study names. Every
session also has ``describe()``: the runtime, its version, the device and ISA, the precision and
the thread/stream settings it actually ran with (read back from the runtime where it can say).

Precision is explicit. ``fp32`` (the default) means float parts run in float32, also where the
runtime would otherwise pick a reduced precision by itself (OpenVINO's CPU plugin runs "fp32"
models in bf16 on CPUs with bf16 units unless told otherwise; TensorRT uses TF32 on Ampere and
later unless told otherwise). ``bf16``/``fp16`` ask for the runtime's reduced precision. int8
layers (the QDQ nodes) run int8 either way.

Example::

    runtime = require("openvino")                      # one-line AutocompError if not installed
    session = runtime.open(onnx_bytes, RuntimeOptions(threads=1))
    logits = session.run(None, {"input": x})[0]
    session.describe()["version"]                      # e.g. "2026.4.1-..."
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from autocomp.errors import AutocompError
from autocomp.runtimes.device_timing import ISA_FLAGS, cpu_record  # noqa: F401 - ISA_FLAGS: base.NAME too

if TYPE_CHECKING:
    import numpy as np

T = TypeVar("T")
DEFAULT = "onnxruntime"
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class RuntimeOptions:
    """How a session runs: intra-op ``threads``, ``device`` (``cpu``/``cuda[:N]``, where the
    runtime has a choice), ``precision`` of float parts, and the ``batch`` latency is timed at
    (a runtime that compiles per shape prepares that one first)."""

    threads: int = 1
    device: str = "cpu"
    precision: str = "fp32"
    batch: int = 1


class Session(Protocol):
    def run(self, output_names: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]: ...

    def describe(self) -> dict[str, Any]: ...


class Runtime:
    """One runtime. Subclasses set the class attributes and implement ``version`` and ``open``.

    ``formats`` maps an export format this runtime writes (``autocomp export --format``) to the
    file extension it takes; ``save`` writes it from the artifact's ONNX bytes.
    """

    name: ClassVar[str]  # as on the command line: --runtime NAME
    label: ClassVar[str]  # as people write it: "ONNX Runtime"
    package: ClassVar[str]  # the module that must be importable
    extra: ClassVar[str | None] = None  # pip extra that installs it: pip install -e ".[EXTRA]"
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    formats: ClassVar[dict[str, str]] = {}

    def missing(self, options: RuntimeOptions = RuntimeOptions()) -> str | None:
        """Why this runtime cannot run here with ``options`` (one line), or None when it can."""
        if importlib.util.find_spec(self.package) is None:
            how = f'pip install -e ".[{self.extra}]"' if self.extra else f"pip install {self.package}"
            return f"runtime {self.name}: {self.label} is not installed ({how})"
        if options.precision not in self.precisions:
            return (f"runtime {self.name}: precision {options.precision} is not offered by {self.label} here "
                    f"(it runs {', '.join(self.precisions)})")
        return None

    def version(self) -> str:
        raise NotImplementedError

    def open(self, model: bytes, options: RuntimeOptions = RuntimeOptions()) -> Session:
        """A session over the serialized plain ONNX ``model``."""
        raise NotImplementedError

    def save(self, model: bytes, out: Path, fmt: str, options: RuntimeOptions = RuntimeOptions()) -> list[Path]:
        """Write ``model`` in this runtime's own format ``fmt``; return the files written."""
        raise AutocompError(f"runtime {self.name} writes no format {fmt!r}")

    def open_file(self, path: Path, options: RuntimeOptions | None = RuntimeOptions()) -> Session:
        """A session over a file ``save`` wrote: with ``options``, or the runtime's defaults (None)."""
        raise NotImplementedError

    def load_call(self, path: Path, options: RuntimeOptions = RuntimeOptions()) -> str:
        """The call that loads a file ``save`` wrote with the settings it was measured with."""
        raise NotImplementedError


_RUNTIMES: dict[str, Runtime] = {}


def register(cls: type[Runtime]) -> type[Runtime]:
    """Class decorator: make ``cls`` available as ``--runtime cls.name``."""
    _RUNTIMES[cls.name] = cls()
    return cls


def runtime_names() -> tuple[str, ...]:
    return tuple(_RUNTIMES)


def get_runtime(name: str) -> Runtime:
    """The registered runtime ``name``, or a one-line error listing the known ones."""
    try:
        return _RUNTIMES[name]
    except KeyError:
        raise AutocompError(f"unknown runtime {name!r} (expected {', '.join(_RUNTIMES)})") from None


def require(name: str, options: RuntimeOptions = RuntimeOptions()) -> Runtime:
    """The runtime, checked to run here with ``options``; a one-line ``AutocompError`` if not.

    Example::

        require("tensorrt")   # AutocompError: runtime tensorrt: TensorRT is not installed (...)
    """
    runtime = get_runtime(name)
    problem = runtime.missing(options)
    if problem:
        raise AutocompError(problem)
    return runtime


def format_runtime(fmt: str) -> Runtime | None:
    """The runtime whose own format ``fmt`` is (``openvino`` -> OpenVINO), or None."""
    for runtime in _RUNTIMES.values():
        if fmt in runtime.formats:
            return runtime
    return None


@lru_cache(maxsize=1)
def host_cpu() -> dict[str, Any]:
    """The CPU the host reports: model name, architecture and the ISA flags that pick kernels
    (read as a measuring device reads its own: ``device_timing.cpu_record``)."""
    return cpu_record()


def summary(record: dict[str, Any] | str | None) -> str:
    """One line for people: ``OpenVINO 2026.4.1 on CPU (AMD EPYC; avx512_vnni, avx512_bf16), fp32,
    1 thread, 1 stream``. A study made before runtimes were recorded ran ONNX Runtime on the CPU."""
    if not record:
        return "ONNX Runtime on CPU"
    if isinstance(record, str):
        return record
    version = str(record.get("version", "")).split("-")[0]
    where = record.get("device_name") or record.get("cpu") or ""
    isa = ", ".join(record.get("isa") or [])
    detail = "; ".join(x for x in (where, isa) if x)
    parts = [f"{record.get('label', record.get('runtime'))} {version} on {record.get('device', 'CPU')}"
             + (f" ({detail})" if detail else ""), str(record.get("precision", "fp32"))]
    threads = record.get("threads")
    if threads:
        parts.append(f"{threads} thread{'s' if threads != 1 else ''}")
    streams = record.get("streams")
    if streams:
        parts.append(f"{streams} stream{'s' if streams != 1 else ''}")
    return ", ".join(parts)


def beside(fn: Callable[..., T], sessions: Sequence[Any], *args: Any, **kw: Any) -> T:
    """``fn(sessions, *args, **kw)``, run in the process the sessions live in.

    A hosted runtime's sessions (OpenVINO's) live in that runtime's own process; a timed loop must
    run there, not as one request per timed call, whose round trip would be timed with it. ``fn``
    and its arguments travel pickled, so ``fn`` must be importable by name (a module-level
    function) and return something picklable. Sessions of this process, or of different
    processes, run ``fn`` here.

    Example::

        rounds = beside(timed_rounds_of, [trial, teacher], x, min_runs=30)
    """
    hosts = {id(host): host for host in (getattr(s, "host", None) for s in sessions)}
    if len(hosts) == 1:
        (host,) = hosts.values()
        if host is not None:
            return host.call(fn, list(sessions), *args, **kw)
    return fn(list(sessions), *args, **kw)
