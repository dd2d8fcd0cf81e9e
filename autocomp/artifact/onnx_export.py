"""Student -> float ONNX graph, plus which graph nodes carry quantized weights.

The legacy TorchScript exporter is used (``dynamo=False``): on this CPU it exports a small
CNN in ~0.05 s against ~3 s for the dynamo exporter, and export runs once per trial.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable

import onnx
import torch
from torch import nn
from torch.nn.utils import parametrize

from autocomp.artifact.matching import COMPUTE_OPS, match_layers
from autocomp.errors import TrialFailed
from autocomp.methods.quantize import FakeQuant
from autocomp.models.layers import called_layers, compute_layers

OPSET = 17
__all__ = ["COMPUTE_OPS", "OPSET", "bake", "nodes_to_initializers", "to_onnx", "unshare_constants"]


def bake(student: nn.Module) -> dict[str, int]:
    """Make weights plain tensors, in place: masks applied, weights on their quant grid.

    Returns ``{layer name: weight bits}`` of the quantized layers, read from their
    ``FakeQuant`` parametrizations before those are removed: the one way the bit width
    reaches the exporter.

    In place on purpose: ``remove_parametrizations`` deletes the weight property from the
    parametrized class, which a deep copy shares with its original, so baking a copy would
    break the original.
    """
    bits: dict[str, int] = {}
    for name, module in list(student.named_modules()):
        if parametrize.is_parametrized(module):
            for tensor in list(module.parametrizations.keys()):
                for p in module.parametrizations[tensor]:
                    if isinstance(p, FakeQuant):
                        bits[name] = p.bits
                parametrize.remove_parametrizations(module, tensor, leave_parametrized=True)
    student.eval()
    return bits


def nodes_to_initializers(proto: onnx.ModelProto,
                          value_of: Callable[[onnx.NodeProto], onnx.TensorProto | None]) -> None:
    """Replace every node for which ``value_of`` gives a tensor by a copy of that tensor, as an
    initializer named for the node's output (in place)."""
    keep = []
    for node in proto.graph.node:
        value = value_of(node)
        if value is None:
            keep.append(node)
            continue
        tensor = onnx.TensorProto()
        tensor.CopyFrom(value)
        tensor.name = node.output[0]
        proto.graph.initializer.append(tensor)
    del proto.graph.node[:]
    proto.graph.node.extend(keep)


def unshare_constants(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Replace ``Identity(initializer)`` nodes with their own copy of the initializer.

    The exporter de-duplicates equal constants (e.g. the zero biases of BatchNorm-folded convs
    at init) and routes the copies through Identity nodes. ORT fuses a QDQ conv into an int8
    kernel only when its bias is a constant initializer; through an Identity it stays a float
    conv wrapped in (de)quantize ops, slower than fp32 (4x on resnet18 here).
    """
    inits = {i.name: i for i in proto.graph.initializer}
    nodes_to_initializers(proto, lambda n: inits.get(n.input[0]) if n.op_type == "Identity" else None)
    used = {i for n in proto.graph.node for i in n.input} | {o.name for o in proto.graph.output}
    survivors = [i for i in proto.graph.initializer if i.name in used]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(survivors)
    return proto


def to_onnx(model: nn.Module, example_input: torch.Tensor,
            layer_bits: dict[str, int] | None = None) -> tuple[onnx.ModelProto, dict[str, int]]:
    """Export a baked model; return the graph and ``{node name: weight bits}``.

    ``layer_bits`` is what ``bake`` returned. Each quantized layer's nodes are found by the
    weight they carry (``match_layers``), so graphs whose compute nodes do not follow module
    calls one to one (attention, weights passed to ``F.linear``, a module called twice) map
    as well as plain CNNs do.
    """
    layer_bits = layer_bits or {}
    model = model.eval()
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, (example_input,), buf, dynamo=False, opset_version=OPSET,
                input_names=["input"], output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            )
    except Exception as exc:  # exporter errors are many types; the trial records the reason
        raise TrialFailed(f"ONNX export failed: {type(exc).__name__}: {exc}".splitlines()[0]) from exc
    proto = unshare_constants(onnx.load_from_string(buf.getvalue()))
    bits: dict[str, int] = {}
    if layer_bits:
        layers = {name: m for name, m in compute_layers(model).items() if name in layer_bits}
        found = match_layers(proto, layers)
        for node_name, layer in found.items():
            bits[node_name] = int(layer_bits[layer])
        unmatched = set(layers) - set(found.values())
        # Only an unmatched layer the model calls is an error (one never called has no node); the
        # extra forward pass that tells them apart runs only then, not on every trial's export.
        missing = sorted(unmatched & called_layers(model, example_input)) if unmatched else []
        if missing:
            raise TrialFailed(f"no ONNX node carries the weight of {len(missing)} quantized layer(s): "
                              f"{', '.join(missing[:3])}")
    return proto, bits
