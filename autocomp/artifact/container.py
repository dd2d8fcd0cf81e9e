"""The ``.acz`` artifact: an ONNX graph whose weights are stored compactly.

A ZIP file (DEFLATE, fixed timestamps so equal models give equal bytes) holding:

- ``model.onnx``: the graph with every initializer's data removed (names, types, shapes kept);
- ``weights.bin``: the initializers' data, concatenated;
- ``manifest.json``: for each initializer, its offset, length and encoding:
  - ``raw``: little-endian bytes as ONNX stores them;
  - ``packed``: int8 codes in ``[-q, q]`` (``q = 2**(bits-1) - 1``) stored as ``code + q`` in
    ``bits`` bits each, big-endian bit order (``numpy.packbits``);
  - ``sparse``: a 1-bit-per-element nonzero mask, then the nonzero values either ``packed``
    (int8 codes) or raw float32.

``load_model`` expands it back into an ordinary ONNX ``ModelProto`` in ~30 lines of numpy; that
is the whole loader a device needs next to ONNX Runtime.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from autocomp.methods.quantize import qmax

FORMAT = "autocomp-acz"
VERSION = 1
_DATE = (2020, 1, 1, 0, 0, 0)


def _pack(codes: np.ndarray, bits: int) -> bytes:
    u = (codes.astype(np.int16) + qmax(bits)).astype(np.uint8)
    b = np.unpackbits(u[:, None], axis=1)[:, 8 - bits :]
    return np.packbits(b.reshape(-1)).tobytes()


def _unpack(data: bytes, count: int, bits: int) -> np.ndarray:
    b = np.unpackbits(np.frombuffer(data, np.uint8))[: count * bits].reshape(count, bits)
    u = np.packbits(np.pad(b, ((0, 0), (8 - bits, 0))), axis=1).reshape(-1)
    return (u.astype(np.int16) - qmax(bits)).astype(np.int8)


def _encode(arr: np.ndarray, bits: int | None) -> tuple[dict, bytes]:
    flat = arr.reshape(-1)
    nonzero = flat != 0
    if bits is not None:
        dense = {"encoding": "packed", "bits": bits}, _pack(flat, bits)
        sparse_vals = _pack(flat[nonzero], bits)
    else:
        dense = {"encoding": "raw"}, flat.astype(flat.dtype.newbyteorder("<")).tobytes()
        sparse_vals = flat[nonzero].astype(flat.dtype.newbyteorder("<")).tobytes() if flat.dtype == np.float32 else None
    if sparse_vals is not None:
        mask = np.packbits(nonzero).tobytes()
        if len(mask) + len(sparse_vals) < len(dense[1]):
            meta = {"encoding": "sparse", "bits": bits, "nnz": int(nonzero.sum()), "mask_len": len(mask)}
            return meta, mask + sparse_vals
    return dense


def _decode(meta: dict, data: bytes, dtype: np.dtype, count: int) -> np.ndarray:
    if meta["encoding"] == "raw":
        return np.frombuffer(data, dtype.newbyteorder("<")).astype(dtype)
    if meta["encoding"] == "packed":
        return _unpack(data, count, meta["bits"])
    mask = np.unpackbits(np.frombuffer(data[: meta["mask_len"]], np.uint8))[:count].astype(bool)
    rest = data[meta["mask_len"] :]
    if meta["bits"] is not None:
        values = _unpack(rest, meta["nnz"], meta["bits"])
    else:
        values = np.frombuffer(rest, np.dtype(np.float32).newbyteorder("<"))
    out = np.zeros(count, dtype=dtype)
    out[mask] = values
    return out


def write(proto: onnx.ModelProto, path: str | Path, packed_bits: dict[str, int]) -> int:
    """Write ``proto`` as an ``.acz`` file; return its size in bytes."""
    graph_only = onnx.ModelProto()
    graph_only.CopyFrom(proto)
    entries, blobs, offset = [], [], 0
    for init in graph_only.graph.initializer:
        arr = numpy_helper.to_array(init)
        meta, data = _encode(arr, packed_bits.get(init.name))
        entries.append({"name": init.name, "offset": offset, "length": len(data), **meta})
        blobs.append(data)
        offset += len(data)
        init.ClearField("raw_data")
        for field in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
            init.ClearField(field)
    manifest = {"format": FORMAT, "version": VERSION, "tensors": entries}
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, payload in (
            ("manifest.json", json.dumps(manifest, sort_keys=True).encode()),
            ("model.onnx", graph_only.SerializeToString()),
            ("weights.bin", b"".join(blobs)),
        ):
            info = zipfile.ZipInfo(name, date_time=_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, payload)
    tmp.replace(path)  # never leave a half-written artifact under the final name
    return path.stat().st_size


def load_model(path: str | Path) -> onnx.ModelProto:
    """Expand an ``.acz`` file into an ordinary ONNX model."""
    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
            raise ValueError(f"{path}: not an autocomp artifact of version {VERSION}")
        proto = onnx.load_from_string(zf.read("model.onnx"))
        weights = zf.read("weights.bin")
    inits = {i.name: i for i in proto.graph.initializer}
    for entry in manifest["tensors"]:
        init = inits[entry["name"]]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(init.data_type)
        count = int(np.prod(init.dims)) if init.dims else 1
        data = weights[entry["offset"] : entry["offset"] + entry["length"]]
        arr = _decode(entry, data, np.dtype(dtype), count).reshape(tuple(init.dims))
        init.CopyFrom(numpy_helper.from_array(arr, init.name))
    return proto


def to_bytes(path: str | Path) -> bytes:
    """The expanded model serialized as plain ONNX (what ``export --format onnx`` writes)."""
    buf = io.BytesIO()
    onnx.save(load_model(path), buf)
    return buf.getvalue()
