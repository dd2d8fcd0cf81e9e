"""Int8 QDQ quantization of the chosen graph nodes with ONNX Runtime's quantizer.

ORT inserts QuantizeLinear/DequantizeLinear pairs and calibrates activation scales (static)
so its CPU provider fuses them into int8 kernels. Weight codes and scales are then overwritten
with the exact b-bit grid the student was trained on: for a ``bits`` layer every stored int8
code lies in ``[-(2**(bits-1) - 1), 2**(bits-1) - 1]`` and the container packs it in ``bits``.
Per-channel grids survive BatchNorm folding (folding rescales whole output channels), so the
codes are recovered exactly from the folded float weights.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from autocomp.methods.quantize import quantize_weight

QUANT_SUFFIX = "_quantized"
# ORT's quantizer advises "pre-processing" (shape inference, BatchNorm and constant folding)
# unless the model carries this mark. The TorchScript exporter already folds BatchNorm and
# constants, and the quantizer infers shapes itself, so the advice does not apply here.
_PRE_PROCESSED = ("onnx.quant.pre_process", "onnxruntime.quant")


def _grid(weight: np.ndarray, bits: int, axis: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The student's grid (``methods.quantize.quantize_weight``) on an ONNX weight, in float64."""
    w = torch.from_numpy(np.asarray(weight, dtype=np.float64))
    if axis is None:  # one scale for the whole tensor
        codes, scale = quantize_weight(w.reshape(1, -1), bits)
        return codes.reshape(w.shape).numpy().astype(np.int8), scale.reshape(()).numpy()
    codes, scale = quantize_weight(w, bits, axis)
    return codes.numpy().astype(np.int8), scale.numpy()


@contextlib.contextmanager
def _root_logger_untouched() -> Iterator[None]:
    """ORT's quantizer logs through ``logging.warning``/``logging.info``, which install a stderr
    handler on the root logger when it has none. A NullHandler held for the call prevents that;
    the root logger is left exactly as found (its level is never changed)."""
    root = logging.getLogger()
    guard = logging.NullHandler() if not root.handlers else None
    if guard:
        root.addHandler(guard)
    try:
        yield
    finally:
        if guard:
            root.removeHandler(guard)


class _Batches:
    """ORT CalibrationDataReader over a few input batches."""

    def __init__(self, batches: Iterable[np.ndarray]) -> None:
        self._it = iter([{"input": b} for b in batches])

    def get_next(self) -> dict | None:
        return next(self._it, None)

    def rewind(self) -> None:  # pragma: no cover - ORT calls it only for some calibrators
        pass


def quantize(
    proto: onnx.ModelProto,
    node_bits: dict[str, int],
    calibration: list[np.ndarray],
    mode: str = "static",
) -> tuple[onnx.ModelProto, dict[str, int]]:
    """Return the QDQ (static) or integer-op (dynamic) graph and ``{int8 initializer: bits}``."""
    from onnxruntime.quantization import (  # deferred: heavy import
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    class Reader(_Batches, CalibrationDataReader):
        pass

    proto = constants_as_initializers(proto)
    nodes = list(node_bits) + int8_neighbours(proto, node_bits)
    onnx.helper.set_model_props(proto, {**{p.key: p.value for p in proto.metadata_props}, _PRE_PROCESSED[0]:
                                        _PRE_PROCESSED[1]})
    with tempfile.TemporaryDirectory() as tmp, _root_logger_untouched():
        src, dst = Path(tmp, "fp32.onnx"), Path(tmp, "q.onnx")
        onnx.save(proto, src)
        if mode == "dynamic":
            # ORT's dynamic quantizer turns Gemm into MatMul under a new name, which would miss
            # nodes_to_quantize; converting the chosen Gemms first keeps their names.
            proto = _gemm_to_matmul(proto, set(node_bits))
            onnx.save(proto, src)
            quantize_dynamic(
                src, dst, per_channel=True, weight_type=QuantType.QInt8,
                nodes_to_quantize=nodes, extra_options={"WeightSymmetric": True},
            )
            quantized = onnx.load(dst)
            return quantized, _set_exact_codes_dynamic(proto, quantized, node_bits)
        else:
            quantize_static(
                src, dst, Reader(calibration_chunks(calibration)), quant_format=QuantFormat.QDQ, per_channel=True,
                weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                nodes_to_quantize=nodes, extra_options={"WeightSymmetric": True},
            )
        quantized = onnx.load(dst)
    return tidy_int8_graph(quantized), _set_exact_codes(proto, quantized, node_bits)


# --- calibration in chunks ------------------------------------------------------------------
# ORT's calibration session held about 0.7 GB per 224-px image of maxvit_t in a batch: a batch
# of 32 took the 24 GB build machine down (8 peaked at 7.5 GB, 32 one at a time at 3.3 GB). The
# MinMax calibrator keeps each run's min and max and takes their min and max at the end, so
# smaller runs change no range, only the memory (and small images keep their batches whole).
CALIBRATION_VALUES = 2 ** 18  # input values per calibration run: 85 images of 3x32x32, 1 of 3x224x224


def calibration_chunks(batches: Iterable[np.ndarray], max_values: int | None = None) -> list[np.ndarray]:
    """The same images in batches of at most ``max_values`` (default ``CALIBRATION_VALUES``) input
    values, at least one image each."""
    max_values = max_values or CALIBRATION_VALUES
    out = []
    for batch in batches:
        per = max(1, max_values // max(1, int(np.prod(batch.shape[1:]))))
        out.extend(batch[i : i + per] for i in range(0, len(batch), per))
    return out


# Float math ONNX Runtime has no int8 kernel for (GELU's Div and Erf, attention's Softmax, ...):
# quantizing such a node only adds a DequantizeLinear/QuantizeLinear round trip around it.
FLOAT_ONLY_OPS = frozenset({"Div", "Erf", "Gelu", "Softmax", "Sqrt", "Pow", "Exp", "Log"})


def int8_neighbours(proto: onnx.ModelProto, node_bits: dict[str, int]) -> list[str]:
    """Non-compute nodes (ReLU, pooling, Add, reshapes, ...) whose every data input is already int8,
    except ``FLOAT_ONLY_OPS``.

    Quantizing them too keeps runs of int8 layers in the int8 domain instead of converting
    back to float between them (6-9 % faster on LeNet-5 and resnet18 here); a node next to a
    float layer, or without an int8 kernel, is left alone so it gains no extra (de)quantize ops.
    """
    from autocomp.artifact.onnx_export import COMPUTE_OPS

    skip = FLOAT_ONLY_OPS.union(COMPUTE_OPS)
    constants = {i.name for i in proto.graph.initializer}
    shapes: set[str] = set()  # integer shape arithmetic (Shape -> Gather -> Div -> Concat): not data
    int8: set[str] = set()
    extra: list[str] = []
    for node in proto.graph.node:  # ONNX nodes are topologically sorted
        if node.name in node_bits:
            int8.update(node.output)
            continue
        inputs = [i for i in node.input if i]
        if node.op_type == "Shape" or (inputs and set(inputs) <= constants | shapes and set(inputs) & shapes):
            shapes.update(node.output)
        data = [i for i in inputs if i not in constants and i not in shapes]
        if node.op_type not in skip and data and all(i in int8 for i in data):
            extra.append(node.name)
            int8.update(node.output)
    return extra


# --- keeping int8 runs int8 (issue 12) ----------------------------------------------------------
# What ONNX Runtime executes is the proof: ``tests/artifact/test_int8_graphs.py`` dumps the
# optimized graph of every torchvision family and checks that no DequantizeLinear feeds a
# QuantizeLinear between two int8 ops.


def constants_as_initializers(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Turn ``Constant`` nodes that feed no compute node's weight into initializers, in place.

    The TorchScript exporter writes small constants (Clip's min/max for ReLU6, Reshape shapes)
    as ``Constant`` nodes. ``int8_neighbours`` and ORT's quantizer take only initializers for
    constants, so a Clip with ``Constant`` bounds looked like a two-input op, stayed float, and
    ORT ran a DequantizeLinear -> Clip -> QuantizeLinear detour around every ReLU6 (36 in
    MobileNetV2, which then ran at 1.0x fp32 instead of 0.6x). Constants read by a Conv/Gemm/
    MatMul stay nodes: layer matching counts initializer-weighted compute nodes as layers.
    """
    from autocomp.artifact.onnx_export import COMPUTE_OPS, nodes_to_initializers

    weight_inputs = {i for n in proto.graph.node if n.op_type in COMPUTE_OPS for i in n.input[1:]}

    def value_of(node: onnx.NodeProto) -> onnx.TensorProto | None:
        value = node.attribute[0] if node.op_type == "Constant" and len(node.attribute) == 1 else None
        ok = value is not None and value.name == "value" and node.output[0] not in weight_inputs
        return value.t if ok else None

    nodes_to_initializers(proto, value_of)
    return proto


def tidy_int8_graph(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Two rewrites of ORT's QDQ output that keep int8 tensors int8 where ORT's fusions do not.

    - ``Shape`` reads the int8 tensor, not its DequantizeLinear: a shape is the same either
      way, but ORT kept one full dequantization per ``x.size()`` alive (77 in ShuffleNetV2's
      channel shuffles).
    - ``DQ -> Transpose -> Q`` with one scale and zero point becomes a Transpose of the int8
      tensor: after ORT's transpose optimizer moved it (ConvNeXt's LayerNorm2d permutes) a
      bare DequantizeLinear -> QuantizeLinear pair was left between two int8 ops.
    """
    graph = proto.graph
    producer = {out: n for n in graph.node for out in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    for node in graph.node:
        source = producer.get(node.input[0]) if node.op_type == "Shape" else None
        if source is not None and source.op_type == "DequantizeLinear":
            node.input[0] = source.input[0]
    dropped: set[int] = set()
    for node in graph.node:
        dq = producer.get(node.input[0]) if node.op_type == "Transpose" else None
        users = consumers.get(node.output[0], [])
        if dq is None or dq.op_type != "DequantizeLinear" or len(users) != 1 or node.output[0] in outputs:
            continue
        q = users[0]
        if q.op_type != "QuantizeLinear" or not _same_quant_params(proto, dq, q):
            continue
        node.input[0] = dq.input[0]  # the Transpose now moves int8 codes
        node.output[0] = q.output[0]
        dropped.add(id(q))
    kept = [n for n in graph.node if id(n) not in dropped]
    used = {i for n in kept for i in n.input} | outputs
    kept = [n for n in kept if n.op_type != "DequantizeLinear" or n.output[0] in used]  # DQs only Shape read
    del graph.node[:]
    graph.node.extend(kept)
    return proto


def _same_quant_params(proto: onnx.ModelProto, a: onnx.NodeProto, b: onnx.NodeProto) -> bool:
    """True when two (de)quantize nodes use equal constant scales, zero points and axis."""
    inits = {i.name: i for i in proto.graph.initializer}
    if len(a.input) != len(b.input) or {x.name: x for x in a.attribute} != {x.name: x for x in b.attribute}:
        return False
    for x, y in zip(a.input[1:], b.input[1:], strict=True):
        if x != y and (x not in inits or y not in inits
                       or not np.array_equal(numpy_helper.to_array(inits[x]), numpy_helper.to_array(inits[y]))
                       or inits[x].data_type != inits[y].data_type):
            return False
    return True


def _set_exact_codes(
    fp32: onnx.ModelProto, quantized: onnx.ModelProto, node_bits: dict[str, int]
) -> dict[str, int]:
    floats = {i.name: i for i in fp32.graph.initializer}
    weight_bits: dict[str, int] = {}
    for node in fp32.graph.node:
        if node.name in node_bits and len(node.input) > 1 and node.input[1] in floats:
            weight_bits[node.input[1]] = node_bits[node.name]
    inits = {i.name: i for i in quantized.graph.initializer}
    dq_of = {n.input[0]: n for n in quantized.graph.node if n.op_type == "DequantizeLinear"}
    producer = {out: n for n in quantized.graph.node for out in n.output}
    stored: dict[str, int] = {}
    for name, bits in weight_bits.items():
        q_name, s_name = name + QUANT_SUFFIX, name + "_scale"
        if q_name not in inits or s_name not in inits:
            continue  # ORT left this node in float (unsupported pattern): nothing to pack
        w = numpy_helper.to_array(floats[name])
        old_scale = numpy_helper.to_array(inits[s_name]).astype(np.float64)
        dq = dq_of.get(q_name)
        axis = None
        if old_scale.size > 1:
            axis = _axis(dq, w.ndim) if dq is not None else next(a for a, d in enumerate(w.shape)
                                                                   if d == old_scale.size)
        codes, scale = _grid(w, bits, axis)
        new_scale = scale.reshape(old_scale.shape)
        inits[q_name].CopyFrom(numpy_helper.from_array(codes, q_name))
        inits[s_name].CopyFrom(numpy_helper.from_array(new_scale.astype(np.float32), s_name))
        if dq is not None:
            _rescale_bias(quantized, dq.output[0], old_scale, new_scale, inits, producer)
        stored[q_name] = bits
    return stored


def _axis(dq: onnx.NodeProto, ndim: int) -> int:
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)  # ONNX default axis is 1
    return axis % ndim


def _rescale_bias(
    graph_model: onnx.ModelProto, weight_out: str, old_scale: np.ndarray, new_scale: np.ndarray,
    inits: dict, producer: dict,
) -> None:
    """Keep ``bias_scale == x_scale * w_scale``, which ORT's int8 kernels assume.

    ORT quantized the bias to int32 with its own (8-bit) weight scale; after the weight scale
    changes, the bias codes are re-expressed on the new scale.
    """
    for node in graph_model.graph.node:
        if len(node.input) < 3 or node.input[1] != weight_out:
            continue
        bias_dq = producer.get(node.input[2])
        if bias_dq is None or bias_dq.op_type != "DequantizeLinear":
            continue
        b_name, bs_name = bias_dq.input[0], bias_dq.input[1]
        bias = numpy_helper.to_array(inits[b_name]).astype(np.float64)
        b_scale = numpy_helper.to_array(inits[bs_name]).astype(np.float64)
        value = bias * b_scale
        ratio = (new_scale / old_scale).reshape(-1)
        b_scale_new = b_scale * (ratio if ratio.size == b_scale.size else ratio[0])
        codes = np.round(value / b_scale_new)
        info = np.iinfo(np.int32)
        inits[b_name].CopyFrom(numpy_helper.from_array(np.clip(codes, info.min, info.max).astype(np.int32), b_name))
        inits[bs_name].CopyFrom(numpy_helper.from_array(b_scale_new.astype(np.float32), bs_name))


# --- dynamic mode ---------------------------------------------------------------------------
# ConvInteger / MatMulInteger take int8 weights with a zero point and no scale; the scale is a
# float Mul after the integer op, so a per-output-channel scale is just a broadcastable vector
# there. ORT picks a per-tensor scale for ConvInteger; it is replaced by the per-channel grid.


def _gemm_to_matmul(proto: onnx.ModelProto, names: set[str]) -> onnx.ModelProto:
    """Rewrite the named ``Gemm`` nodes (``A @ B^T + C``, B constant) as ``MatMul`` (+ ``Add``)."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    graph = out.graph
    inits = {i.name: i for i in graph.initializer}
    users: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    new_nodes = []
    for node in graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        simple = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0)
        if node.op_type != "Gemm" or node.name not in names or not simple or node.input[1] not in inits:
            new_nodes.append(node)
            continue
        w_name = node.input[1]
        weight = numpy_helper.to_array(inits[w_name])
        if attrs.get("transB", 0):
            weight = weight.T
        mm_weight = w_name + "_matmul"
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight), mm_weight))
        users[w_name] -= 1
        has_bias = len(node.input) > 2 and node.input[2] != ""
        mm_out = node.output[0] + "_matmul" if has_bias else node.output[0]
        new_nodes.append(onnx.helper.make_node("MatMul", [node.input[0], mm_weight], [mm_out], name=node.name))
        if has_bias:
            new_nodes.append(
                onnx.helper.make_node("Add", [mm_out, node.input[2]], [node.output[0]], name=node.name + "_bias")
            )
    graph.ClearField("node")
    graph.node.extend(new_nodes)
    kept = [i for i in graph.initializer if users.get(i.name, 1) > 0]  # drop weights now unused
    graph.ClearField("initializer")
    graph.initializer.extend(kept)
    return out


def _set_exact_codes_dynamic(
    fp32: onnx.ModelProto, quantized: onnx.ModelProto, node_bits: dict[str, int]
) -> dict[str, int]:
    """Overwrite ORT's int8 weights with the per-output-channel b-bit grid of the student."""
    floats = {i.name: i for i in fp32.graph.initializer}
    inits = {i.name: i for i in quantized.graph.initializer}
    stored: dict[str, int] = {}
    for node in fp32.graph.node:
        if node.name not in node_bits or len(node.input) < 2 or node.input[1] not in floats:
            continue
        name, bits = node.input[1], node_bits[node.name]
        q_name, s_name, z_name = name + QUANT_SUFFIX, name + "_scale", name + "_zero_point"
        if q_name not in inits or s_name not in inits:
            continue  # ORT left this node in float: nothing to pack
        w = numpy_helper.to_array(floats[name])
        axis = 1 if node.op_type == "MatMul" else 0  # MatMul weights are (in, out); Conv (out, ...)
        codes, scale = _grid(w, bits, axis)
        # The scale multiplies the integer op's output: (out,) for MatMul, (out, 1, 1) for Conv.
        shape = (-1,) if axis == 1 else (-1,) + (1,) * (w.ndim - 2)
        inits[q_name].CopyFrom(numpy_helper.from_array(codes, q_name))
        inits[s_name].CopyFrom(numpy_helper.from_array(scale.reshape(shape).astype(np.float32), s_name))
        if z_name in inits:  # symmetric grid: zero points are 0 (scalar or per column)
            zp = numpy_helper.to_array(inits[z_name])
            inits[z_name].CopyFrom(numpy_helper.from_array(np.zeros_like(zp), z_name))
        stored[q_name] = bits
    return stored
