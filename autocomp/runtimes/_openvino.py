"""OpenVINO on the CPU: the artifact's QDQ graph, read by OpenVINO's ONNX frontend, runs int8 where
the graph quantizes (OpenVINO's low-precision transformations turn QDQ into u8/i8 kernels, AMX or
VNNI where the CPU has them).

Settings, all explicit and read back in ``describe()``: ``INFERENCE_PRECISION_HINT`` (f32 for
``fp32``: the CPU plugin's default on a CPU with bf16 units is bf16), ``INFERENCE_NUM_THREADS``
= threads, ``NUM_STREAMS`` = 1 and ``PERFORMANCE_HINT`` = LATENCY (one request at a time, as
the protocol times). The IR ``autocomp export --format openvino`` writes records them in its
``runtime_options`` rt_info, but OpenVINO 2026.4 does not apply that hint by itself: compile it
with ``compile_config`` (the card says so and gives the call). Marking ops to keep float32
(``disable_fp16_compression``) was tried: after an IR round trip the CPU plugin kept the convs
in f32 but still ran the FullyConnected layers in bf16, so nothing short of the hint is relied on.

Shapes: the graph's batch is dynamic; a session compiles a static copy per input shape on first
use (the latency batch first, then e.g. the accuracy batches), as a deployment with a fixed
batch does; OpenVINO's dynamic-shape path was about 1.3x slower on MobileNetV2 at batch 1.

Example::

    session = get_runtime("openvino").open(onnx_bytes, RuntimeOptions(threads=1))
    session.run(None, {"input": x})[0]
    session.describe()["executed"]   # {"Convolution": {"u8": 52}, ...}: the kernels' precisions
"""

from __future__ import annotations

import tempfile
from collections import Counter, OrderedDict
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from autocomp.runtimes.base import Runtime, RuntimeOptions, host_cpu, register

HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
CAPABILITY = {"fp32": "FP32", "bf16": "BF16", "fp16": "FP16"}
MAX_SHAPES = 4  # compiled shapes a session keeps (latency batch, accuracy batches, a remainder)
COMPUTE_TYPES = ("Convolution", "GroupConvolution", "FullyConnected", "MatMul", "Deconvolution")


def ov_model(model: bytes, precision: str = "fp32") -> Any:
    """The ONNX graph as an ``openvino.Model``, the precision it is meant to run in recorded."""
    import openvino as ov

    m = ov.Core().read_model(model, b"")
    m.set_rt_info(HINTS[precision], ["runtime_options", "INFERENCE_PRECISION_HINT"])
    return m


def compile_config(options: RuntimeOptions = RuntimeOptions()) -> dict[str, Any]:
    """The ``openvino.Core().compile_model(model, "CPU", config)`` config a session runs with."""
    return {"INFERENCE_PRECISION_HINT": HINTS[options.precision], "INFERENCE_NUM_THREADS": options.threads,
            "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}


def executed_precisions(compiled: Any) -> dict[str, dict[str, int]]:
    """``{layer type: {precision: count}}`` of the compute kernels a compiled model runs."""
    out: dict[str, Counter] = {}
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        kind = info["layerType"].astype(str)
        if kind in COMPUTE_TYPES:
            out.setdefault(kind, Counter())[info["runtimePrecision"].astype(str)] += 1
    return {k: dict(v) for k, v in out.items()}


@lru_cache(maxsize=1)
def _capabilities() -> tuple[str, ...]:
    import openvino as ov

    return tuple(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def _text(value: Any) -> str:
    """A property as OpenVINO spells it in configs: ``f32``, ``LATENCY``, ``PERFORMANCE``."""
    if hasattr(value, "to_string"):  # openvino.Type
        return value.to_string()
    return value.name if hasattr(value, "name") else str(value)


class OpenVINOSession:
    """Compiled static copies of one ``openvino.Model``, one per input shape; ``run`` as ONNX Runtime's."""

    def __init__(self, model: Any, options: RuntimeOptions, config: dict[str, Any] | None = None) -> None:
        import openvino as ov

        self._core = ov.Core()
        self._model = model
        self._options = options
        self._config = compile_config(options) if config is None else config
        self._compiled: OrderedDict[tuple, tuple[Any, Any]] = OrderedDict()
        self._names = [o.get_any_name() for o in model.outputs]
        shape = model.inputs[0].get_partial_shape()
        if shape.rank.is_static and all(d.is_static for d in list(shape)[1:]):
            # Compile the timed shape now: a graph OpenVINO cannot run fails here, not mid-timing.
            self._request((options.batch, *(d.get_length() for d in list(shape)[1:])))

    def _request(self, shape: tuple) -> Any:
        hit = self._compiled.get(shape)
        if hit is not None:
            self._compiled.move_to_end(shape)
            return hit[1]
        model = self._model.clone()
        model.reshape({0: list(shape)})
        compiled = self._core.compile_model(model, "CPU", self._config)
        self._compiled[shape] = (compiled, compiled.create_infer_request())
        while len(self._compiled) > MAX_SHAPES:
            self._compiled.popitem(last=False)
        return self._compiled[shape][1]

    def run(self, output_names: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        (x,) = feeds.values()  # autocomp's graphs take one input, "input"
        request = self._request(tuple(x.shape))
        result = request.infer({0: x}, share_inputs=True, share_outputs=False)
        outs = result.to_tuple()
        if output_names is None:
            return list(outs)
        return [outs[self._names.index(n)] for n in output_names]

    def describe(self) -> dict[str, Any]:
        import openvino as ov

        record = {"runtime": OpenVINO.name, "label": OpenVINO.label, "version": ov.get_version(), "device": "CPU",
                  "device_name": self._core.get_property("CPU", "FULL_DEVICE_NAME"), **host_cpu(),
                  "capabilities": list(self._core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")),
                  "precision": self._options.precision if self._config else "runtime default",
                  "shapes": "static, compiled per input shape"}
        if self._compiled:
            compiled = next(reversed(self._compiled.values()))[0]
            props = {k: compiled.get_property(k) for k in ("INFERENCE_PRECISION_HINT", "INFERENCE_NUM_THREADS",
                                                            "NUM_STREAMS", "PERFORMANCE_HINT", "ENABLE_CPU_PINNING",
                                                            "ENABLE_HYPER_THREADING", "EXECUTION_MODE_HINT")}
            hint = _text(props["INFERENCE_PRECISION_HINT"])
            if not self._config:  # OpenVINO's own choice: say which it made
                record["precision"] = f"{hint} (runtime default)"
            record.update(precision_hint=hint,
                          threads=int(props["INFERENCE_NUM_THREADS"]), streams=int(props["NUM_STREAMS"]),
                          properties={k: _text(v) for k, v in props.items()}, executed=executed_precisions(compiled))
        else:
            record.update(threads=self._options.threads, streams=1,
                          properties={k: str(v) for k, v in self._config.items()})
        return record


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
        import openvino as ov

        return ov.get_version()

    def open(self, model: bytes, options: RuntimeOptions = RuntimeOptions()) -> OpenVINOSession:
        return OpenVINOSession(ov_model(model, options.precision), options)

    def save(self, model: bytes, out: Path, fmt: str = "openvino",
             options: RuntimeOptions = RuntimeOptions()) -> list[Path]:
        """An OpenVINO IR (``out`` = ``NAME.xml``, weights beside it in ``NAME.bin``), float
        weights kept float32 (``save_model`` would compress them to fp16 by default)."""
        import openvino as ov

        if fmt not in self.formats:
            return super().save(model, out, fmt, options)
        out = Path(out)
        targets = [out, out.with_suffix(".bin")]
        # Written beside the target and renamed, so a failure leaves no half-written IR.
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=".autocomp-ir-") as tmp:
            ov.save_model(ov_model(model, options.precision), Path(tmp, "model.xml"), compress_to_fp16=False)
            for src, dst in zip((Path(tmp, "model.xml"), Path(tmp, "model.bin")), targets, strict=True):
                src.replace(dst)
        return targets

    def open_file(self, path: Path, options: RuntimeOptions | None = RuntimeOptions()) -> OpenVINOSession:
        """A session over a written IR: with ``options``' settings, or OpenVINO's defaults (None)."""
        import openvino as ov

        model = ov.Core().read_model(Path(path))
        if options is None:
            return OpenVINOSession(model, RuntimeOptions(), config={})
        return OpenVINOSession(model, options)

    def load_call(self, path: Path, options: RuntimeOptions = RuntimeOptions()) -> str:
        return f"openvino.Core().compile_model({str(path)!r}, 'CPU', {compile_config(options)!r})"
