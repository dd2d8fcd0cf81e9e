"""TensorRT on an NVIDIA GPU, directly (``tensorrt`` Python package; buffers are torch CUDA tensors).

TensorRT executes QDQ graphs as int8 ("explicit quantization"), but only in its own form of
them: int8 (not uint8) quantizers with zero point 0, and no int32 dequantization of biases.
``tensorrt_graph`` re-expresses the artifact's graph that way before the engine is built:

- each uint8 activation quantizer (scale ``s``, zero point ``z``, representable range
  ``[-z*s, (255-z)*s]``) becomes an int8 one with zero point 0 covering the same range,
  ``s' = max(z, 255 - z) * s / 127``: no value the artifact represents is clipped, at the cost
  of up to one bit of resolution after a ReLU (where ``z = 0``). The uint8 range also *did*
  something: ONNX Runtime's quantizer drops a ReLU whose output a uint8 quantizer with ``z = 0``
  clips anyway. So the bound the int8 grid no longer enforces is put back in front of the
  quantizer, as a ``Relu`` (``z = 0``) or a ``Clip`` (TensorRT fuses both into the int8 kernel);
  without it the converted ResNet-like test model agreed with the artifact on 1 % of answers;
- constant dequantizations that are not int8 (the int32 biases) are folded to float32.

So TensorRT measures, and a TensorRT deployment runs, the graph ``tensorrt_graph`` gives;
``describe()`` says so (``graph``). Precision: ``fp32`` clears TF32 (on by default in
TensorRT on Ampere and later), ``fp16``/``bf16`` set the builder flag. One optimization
profile: batch 1 to ``max(batch, 64)``, optimized for the latency batch; larger inputs run in
chunks. ``run`` copies the input to the GPU and the logits back, as a deployment fed from
host memory does, so that copy is in the timing.

Written against TensorRT 10's API (``set_input_shape``, ``set_tensor_address``,
``execute_async_v3``). Never run on this project's build machine (no GPU): its tests skip
with the reason where there is no CUDA device or no TensorRT.

Example::

    session = require("tensorrt").open(onnx_bytes, RuntimeOptions(device="cuda:0"))
    session.run(None, {"input": x})[0]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from autocomp.errors import TrialFailed
from autocomp.runtimes.base import Runtime, RuntimeOptions, register

if TYPE_CHECKING:
    import onnx

MAX_PROFILE_BATCH = 64
WORKSPACE_BYTES = 1 << 30


def _per_axis(values: np.ndarray, rank: int, axis: int) -> np.ndarray:
    """A per-channel vector shaped to broadcast along ``axis`` of a rank-``rank`` tensor."""
    if values.ndim == 0:
        return values
    shape = [1] * rank
    shape[axis % rank] = values.size
    return values.reshape(shape)


def _axis(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 1)


def tensorrt_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """The artifact's graph in the form TensorRT executes as int8 (see the module docstring).

    Example::

        proto = tensorrt_graph(load_model("trial.acz"))   # runs in ONNX Runtime too
    """
    import onnx  # deferred: listing the runtimes stays cheap
    from onnx import TensorProto, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    arrays: dict[str, np.ndarray] = {}

    def array(name: str) -> np.ndarray:
        if name not in arrays:
            arrays[name] = numpy_helper.to_array(inits[name])
        return arrays[name]

    keep, added, rewired, bounds = [], [], {}, {}
    for node in graph.node:
        is_q, is_dq = node.op_type == "QuantizeLinear", node.op_type == "DequantizeLinear"
        if is_dq and node.input[0] in inits and inits[node.input[0]].data_type != TensorProto.INT8:
            # A constant dequantization TensorRT does not take (int32 bias): fold it to float32.
            q = array(node.input[0]).astype(np.float64)
            scale = array(node.input[1]).astype(np.float64)
            zero = array(node.input[2]).astype(np.float64) if len(node.input) > 2 and node.input[2] else 0.0
            rank, axis = q.ndim, _axis(node)
            value = (q - _per_axis(np.asarray(zero), rank, axis)) * _per_axis(scale, rank, axis)
            added.append(numpy_helper.from_array(value.astype(np.float32), node.output[0]))
            continue
        if (is_q or is_dq) and len(node.input) > 2 and node.input[2] in inits \
                and inits[node.input[2]].data_type == TensorProto.UINT8:
            key = (node.input[1], node.input[2])
            if key not in rewired:
                scale = array(key[0]).astype(np.float64)
                zero = array(key[1]).astype(np.float64)
                wide = np.maximum(zero, 255.0 - zero) * scale / 127.0
                wide = np.where(wide > 0, wide, np.finfo(np.float32).tiny)
                names = (f"{key[0]}_trt_s8", f"{key[1]}_trt_s8")
                added += [numpy_helper.from_array(wide.astype(np.float32).reshape(scale.shape), names[0]),
                          numpy_helper.from_array(np.zeros(zero.shape, np.int8), names[1])]
                rewired[key] = names
                bounds[key] = (-zero * scale, (255.0 - zero) * scale, zero)
            node.input[1], node.input[2] = rewired[key]
            if is_q:
                keep += _bound(node, *bounds[key], added)
        keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)
    graph.initializer.extend(added)
    _prune(graph, {i.name for i in added})
    return model


def _prune(graph: onnx.GraphProto, added: set[str]) -> None:
    """Drop the initializers no node reads any more, and the value_info of ``added`` tensors:
    folded biases are float32 now, and a stale value_info would still say int32."""
    used = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
    live = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(live)
    kept_info = [v for v in graph.value_info if v.name not in added]
    del graph.value_info[:]
    graph.value_info.extend(kept_info)


def _bound(q: onnx.NodeProto, low: np.ndarray, high: np.ndarray, zero: np.ndarray,
           added: list) -> list[onnx.NodeProto]:
    """Nodes clamping ``q``'s input to the uint8 range it had (rewiring ``q``). The int8 grid's own
    saturation keeps only its upper end exact (``127 * s'`` is ``(255-z) * s`` for ``z <= 127``;
    its lower end is ``-128 * s'``), so: a Relu for ``z = 0``, else a Clip to both ends."""
    from onnx import helper, numpy_helper

    src, out = q.input[0], f"{q.input[0]}_trt_bound_{q.name or q.output[0]}"
    q.input[0] = out
    if low.ndim == 0 and float(zero) == 0.0:
        return [helper.make_node("Relu", [src], [out], name=f"{out}_relu")]
    if low.ndim == 0:
        lo = numpy_helper.from_array(np.asarray(low, np.float32), f"{out}_min")
        hi = numpy_helper.from_array(np.asarray(high, np.float32), f"{out}_max")
        added += [lo, hi]
        return [helper.make_node("Clip", [src, lo.name, hi.name], [out], name=f"{out}_clip")]
    # ONNX Runtime's quantizer writes per-tensor activation ranges only; anything else is not ours.
    raise TrialFailed(f"TensorRT graph: quantizer {q.name or q.output[0]} has a per-channel uint8 range")


def _cuda_index(device: str) -> int:
    return int(device.split(":", 1)[1]) if device.startswith("cuda:") else 0


class TensorRTSession:
    """A TensorRT engine built from the artifact's graph; ``run`` as ONNX Runtime's (numpy in and out)."""

    def __init__(self, model: bytes, options: RuntimeOptions) -> None:
        import onnx
        import tensorrt as trt
        import torch

        self._options = options
        self._device = torch.device("cuda", _cuda_index(options.device))
        self._logger = trt.Logger(trt.Logger.ERROR)
        builder = trt.Builder(self._logger)
        flags = 0
        if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):  # required before TensorRT 10
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, self._logger)
        graph = tensorrt_graph(onnx.ModelProto.FromString(model))
        if not parser.parse(graph.SerializeToString()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise TrialFailed(f"TensorRT cannot parse the graph: {errors}"[:300])
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
        if hasattr(trt.BuilderFlag, "TF32"):
            config.clear_flag(trt.BuilderFlag.TF32)  # fp32 means fp32, not TF32 matmuls
        if options.precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        elif options.precision == "bf16":
            config.set_flag(trt.BuilderFlag.BF16)
        if hasattr(trt.BuilderFlag, "INT8"):  # explicit QDQ needs it before TensorRT 10 (ignored after)
            config.set_flag(trt.BuilderFlag.INT8)
        tensor = network.get_input(0)
        self._input = tensor.name
        sample = tuple(tensor.shape)[1:]
        self._max = max(options.batch, MAX_PROFILE_BATCH)
        profile = builder.create_optimization_profile()
        profile.set_shape(self._input, (1, *sample), (options.batch, *sample), (self._max, *sample))
        config.add_optimization_profile(profile)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise TrialFailed("TensorRT could not build an engine for the graph")
        self._engine = trt.Runtime(self._logger).deserialize_cuda_engine(plan)
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self._outputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._stream = torch.cuda.Stream(self._device)
        self._plan_bytes = plan.nbytes

    def _chunk(self, x: np.ndarray) -> list[np.ndarray]:
        import torch

        with torch.cuda.stream(self._stream):
            xin = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self._device, non_blocking=True)
            self._context.set_input_shape(self._input, tuple(xin.shape))
            self._context.set_tensor_address(self._input, xin.data_ptr())
            outs = []
            for name in self._outputs:
                out = torch.empty(tuple(self._context.get_tensor_shape(name)), dtype=torch.float32,
                                  device=self._device)
                self._context.set_tensor_address(name, out.data_ptr())
                outs.append(out)
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise TrialFailed("TensorRT failed to run the engine")
            result = [o.cpu().numpy() for o in outs]  # the copy back waits for the engine
        self._stream.synchronize()
        return result

    def run(self, output_names: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        (x,) = feeds.values()
        parts = [self._chunk(x[s : s + self._max]) for s in range(0, len(x), self._max)] or [self._chunk(x)]
        outs = [np.concatenate([p[i] for p in parts]) for i in range(len(self._outputs))]
        if output_names is None:
            return outs
        return [outs[self._outputs.index(n)] for n in output_names]

    def describe(self) -> dict[str, Any]:
        import tensorrt as trt
        import torch

        props = torch.cuda.get_device_properties(self._device)
        return {"runtime": TensorRT.name, "label": TensorRT.label, "version": trt.__version__,
                "device": f"cuda:{self._device.index}", "device_name": props.name,
                "isa": [f"sm_{props.major}{props.minor}"], "precision": self._options.precision,
                "tf32": False, "threads": None, "streams": 1, "max_batch": self._max, "engine_bytes": self._plan_bytes,
                "graph": "uint8 activation quantizers re-expressed as int8 symmetric over the same range; "
                         "int32 biases folded to float32 (autocomp.runtimes._tensorrt.tensorrt_graph)",
                "timing": "host to device copy of the input, engine, device to host copy of the logits"}


@register
class TensorRT(Runtime):
    name = "tensorrt"
    label = "TensorRT"
    package = "tensorrt"
    extra = "tensorrt"
    precisions = ("fp32", "fp16", "bf16")

    def missing(self, options: RuntimeOptions = RuntimeOptions()) -> str | None:
        problem = super().missing(options)
        if problem:
            return problem
        import torch

        if not torch.cuda.is_available():
            return "runtime tensorrt: needs an NVIDIA GPU, and torch sees no CUDA device here"
        return None

    def version(self) -> str:
        import tensorrt as trt

        return trt.__version__

    def open(self, model: bytes, options: RuntimeOptions = RuntimeOptions()) -> TensorRTSession:
        return TensorRTSession(model, options)

