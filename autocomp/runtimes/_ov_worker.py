"""OpenVINO's side of ``--runtime openvino``: runs only inside its host process (``_host``).

Every OpenVINO object lives here: read models, compiled copies per input shape, infer requests.
The caller's process holds ``_openvino.OpenVINOSession`` proxies and never loads OpenVINO's CPU
plugin, so it may fork afterwards (see ``_host``). Importing this module imports OpenVINO.

Example (what the host runs for ``OpenVINO().open(onnx_bytes, options)``)::

    handle = HANDLERS["open"](onnx_bytes, options)
    HANDLERS["run"](resolve(handle), None, {"input": x})
"""

from __future__ import annotations

import tempfile
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from autocomp.runtimes._host import keep
from autocomp.runtimes._openvino import HINTS, OpenVINO, compile_config
from autocomp.runtimes.base import RuntimeOptions, host_cpu

MAX_SHAPES = 4  # compiled shapes a session keeps (latency batch, accuracy batches, a remainder)
COMPUTE_TYPES = ("Convolution", "GroupConvolution", "FullyConnected", "MatMul", "Deconvolution")
PROPERTIES = ("INFERENCE_PRECISION_HINT", "INFERENCE_NUM_THREADS", "NUM_STREAMS", "PERFORMANCE_HINT",
              "ENABLE_CPU_PINNING", "ENABLE_HYPER_THREADING", "EXECUTION_MODE_HINT")


def ov_model(model: bytes, precision: str = "fp32") -> Any:
    """The ONNX graph as an ``openvino.Model``, the precision it is meant to run in recorded."""
    m = ov.Core().read_model(model, b"")
    m.set_rt_info(HINTS[precision], ["runtime_options", "INFERENCE_PRECISION_HINT"])
    return m


def executed_precisions(compiled: Any) -> dict[str, dict[str, int]]:
    """``{layer type: {precision: count}}`` of the compute kernels a compiled model runs, read from
    its runtime graph (``get_runtime_model()``): u8/i8 where OpenVINO runs the layer int8."""
    out: dict[str, Counter] = {}
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        kind = info["layerType"].astype(str)
        if kind in COMPUTE_TYPES:
            out.setdefault(kind, Counter())[info["runtimePrecision"].astype(str)] += 1
    return {k: dict(v) for k, v in out.items()}


def _text(value: Any) -> str:
    """A property as OpenVINO spells it in configs: ``f32``, ``LATENCY``, ``PERFORMANCE``."""
    if hasattr(value, "to_string"):  # openvino.Type
        return value.to_string()
    return value.name if hasattr(value, "name") else str(value)


class CompiledSession:
    """Compiled static copies of one ``openvino.Model``, one per input shape; ``run`` as ONNX Runtime's.

    Shapes: the graph's batch is dynamic; a copy is compiled per input shape on first use (the
    latency batch first, then e.g. the accuracy batches), as a deployment with a fixed batch does;
    OpenVINO's dynamic-shape path was about 1.3x slower on MobileNetV2 at batch 1.
    """

    def __init__(self, model: Any, options: RuntimeOptions, config: dict[str, Any] | None = None) -> None:
        self._core = ov.Core()
        self._model = model
        self._options = options
        self._config = compile_config(options) if config is None else config
        self._compiled: OrderedDict[tuple, tuple[Any, Any]] = OrderedDict()
        self._names = [o.get_any_name() for o in model.outputs]
        if self._timed_shape() is not None:
            # Compile the timed shape now: a graph OpenVINO cannot run fails here, not mid-timing.
            self._request(self._timed_shape())

    def _timed_shape(self) -> tuple | None:
        shape = self._model.inputs[0].get_partial_shape()
        if shape.rank.is_static and all(d.is_static for d in list(shape)[1:]):
            return (self._options.batch, *(d.get_length() for d in list(shape)[1:]))
        return None

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
        """The record; ``executed`` is read from this model's own compiled graph (the latency batch's
        copy is compiled for it if no shape ran yet), never assumed."""
        record = {"runtime": OpenVINO.name, "label": OpenVINO.label, "version": ov.get_version(), "device": "CPU",
                  "device_name": self._core.get_property("CPU", "FULL_DEVICE_NAME"), **host_cpu(),
                  "capabilities": list(self._core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")),
                  "precision": self._options.precision if self._config else "runtime default",
                  "shapes": "static, compiled per input shape"}
        if not self._compiled and self._timed_shape() is not None:
            self._request(self._timed_shape())
        if not self._compiled:
            return {**record, "threads": self._options.threads, "streams": 1,
                    "properties": {k: str(v) for k, v in self._config.items()}}
        compiled = next(reversed(self._compiled.values()))[0]
        props = {k: compiled.get_property(k) for k in PROPERTIES}
        hint = _text(props["INFERENCE_PRECISION_HINT"])
        if not self._config:  # OpenVINO's own choice: say which it made
            record["precision"] = f"{hint} (runtime default)"
        return {**record, "precision_hint": hint, "threads": int(props["INFERENCE_NUM_THREADS"]),
                "streams": int(props["NUM_STREAMS"]), "properties": {k: _text(v) for k, v in props.items()},
                "executed": executed_precisions(compiled)}


def save_ir(model: bytes, out: Path, precision: str = "fp32") -> list[Path]:
    """An OpenVINO IR (``out`` = ``NAME.xml``, weights beside it in ``NAME.bin``), float weights
    kept float32 (``save_model`` would compress them to fp16 by default)."""
    out = Path(out)
    targets = [out, out.with_suffix(".bin")]
    # Written beside the target and renamed, so a failure leaves no half-written IR.
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".autocomp-ir-") as tmp:
        ov.save_model(ov_model(model, precision), Path(tmp, "model.xml"), compress_to_fp16=False)
        for src, dst in zip((Path(tmp, "model.xml"), Path(tmp, "model.bin")), targets, strict=True):
            src.replace(dst)
    return targets


def _open_file(path: Path, options: RuntimeOptions | None) -> int:
    model = ov.Core().read_model(Path(path))
    if options is None:
        return keep(CompiledSession(model, RuntimeOptions(), config={}))
    return keep(CompiledSession(model, options))


HANDLERS = {
    "open": lambda model, options: keep(CompiledSession(ov_model(model, options.precision), options)),
    "open_file": _open_file,
    "run": lambda session, names, feeds: session.run(names, feeds),
    "describe": lambda session: session.describe(),
    "save": save_ir,
    "version": ov.get_version,
    "capabilities": lambda: tuple(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")),
}
