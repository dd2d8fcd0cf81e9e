"""Which ONNX compute node carries which layer's weight.

The exporter does not emit one compute node per module call: attention adds weightless
MatMuls (scores, values), Swin passes ``qkv.weight`` to ``F.linear`` without calling the
module, a module called twice gives two nodes, a Linear becomes ``Gemm`` (2-D input) or a
``MatMul`` with the weight transposed (3-D input), a conv absorbs the BatchNorm after it. So a
node is matched to a layer by the weight it carries: same matrix up to orientation and up to
a scale per output channel (BatchNorm folding), checked row by row. Layers whose weights are
equal (``nn.TransformerEncoder`` clones its layer) are told apart by the node's scope, which
the exporter derives from the module path (``/encoder/layers.0/self_attn/q_proj/MatMul``).

Example::

    match_layers(proto, {"fc1": model.fc1})   # {"/fc1/Gemm": "fc1"}
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper
from torch import nn

COMPUTE_OPS = ("Conv", "Gemm", "MatMul")
_COS_TOL = 1e-4  # float32 BatchNorm folding keeps |cos| within ~1e-7 of 1; distinct rows are far from it


def node_matrix(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> np.ndarray | None:
    """The node's constant weight as ``(out, fan_in)``, or None when it has none."""
    if node.op_type not in COMPUTE_OPS or len(node.input) < 2 or node.input[1] not in inits:
        return None
    w = numpy_helper.to_array(inits[node.input[1]])
    if node.op_type == "Conv":
        return w.reshape(w.shape[0], -1)
    if w.ndim != 2:
        return None
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return w if trans_b else w.T
    return w.T  # MatMul: x @ W with W stored (in, out)


def layer_matrix(layer: nn.Module) -> np.ndarray:
    w = layer.weight.detach().cpu().float().numpy()
    return w.reshape(w.shape[0], -1)


def scope_name(node_name: str) -> str:
    """The module path a node name encodes: ``/layer1/layer1.0/conv1/Conv`` -> ``layer1.0.conv1``,
    ``/encoder/layers.0/mlp/mlp.0/MatMul`` -> ``encoder.layers.0.mlp.0`` (a container's child is
    named after the container's attribute)."""
    parts: list[str] = []
    for part in node_name.strip("/").split("/")[:-1]:
        if parts and part.startswith(parts[-1] + "."):
            parts[-1] = part
        else:
            parts.append(part)
    return ".".join(parts)


def same_rows(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to a nonzero scale per row (zero rows must be zero in both)."""
    if a.shape != b.shape:
        return False
    if len(a) > 8 and not same_rows(a[:4], b[:4]):  # most candidates differ from the first rows on
        return False
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    zero = na == 0
    if not np.array_equal(zero, nb == 0):
        return False
    live = ~zero
    dots = np.abs(np.einsum("ij,ij->i", a[live], b[live], dtype=np.float64))
    return bool(np.all(dots >= (1 - _COS_TOL) * na[live].astype(np.float64) * nb[live]))


def match_layers(proto: onnx.ModelProto, layers: dict[str, nn.Module]) -> dict[str, str]:
    """``{node name: layer name}`` for every compute node whose weight is one of ``layers``'."""
    by_shape: dict[tuple[int, int], list[str]] = {}
    for name, layer in layers.items():
        w = layer.weight
        by_shape.setdefault((w.shape[0], w[0].numel() if w.dim() > 1 else 1), []).append(name)
    inits = {i.name: i for i in proto.graph.initializer}
    found: dict[str, str] = {}
    for node in proto.graph.node:
        candidates = by_shape.get(_shape(node, inits), [])
        if not candidates:
            continue
        w = node_matrix(node, inits)
        scope = scope_name(node.name)
        # The layer the scope names first, then layers inside the scope (a weight passed to a
        # function), then the rest: the weight check decides, the order only breaks ties.
        ranked = sorted(candidates, key=lambda c: (c != scope, not c.startswith(scope + ".") if scope else True))
        for name in ranked:
            if same_rows(w, layer_matrix(layers[name])):
                found[node.name] = name
                break
    return found


def _shape(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> tuple[int, int] | tuple[()]:
    """``(out, fan_in)`` of the node's weight without reading its data; ``()`` if it has none."""
    if node.op_type not in COMPUTE_OPS or len(node.input) < 2 or node.input[1] not in inits:
        return ()
    dims = tuple(inits[node.input[1]].dims)
    if node.op_type == "Conv":
        return (dims[0], int(np.prod(dims[1:]))) if dims else ()
    if len(dims) != 2:
        return ()
    if node.op_type == "Gemm" and next((a.i for a in node.attribute if a.name == "transB"), 0):
        return dims
    return dims[::-1]
