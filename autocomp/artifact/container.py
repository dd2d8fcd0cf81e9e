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
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from autocomp.errors import ArtifactError, StorageFault, os_fault
from autocomp.methods.quantize import qmax

FORMAT = "autocomp-acz"
VERSION = 1
_DATE = (2020, 1, 1, 0, 0, 0)


def _pack(codes: np.ndarray, bits: int) -> bytes:
    u = (codes.astype(np.int16) + qmax(bits)).astype(np.uint8)
    b = np.unpackbits(u[:, None], axis=1)[:, 8 - bits :]
    return np.packbits(b.reshape(-1)).tobytes()


def _unpack(data: bytes, count: int, bits: int) -> np.ndarray:
    """``count`` codes of ``bits`` bits, most significant first, as int8; refuses a code outside ``[-q, q]``."""
    b = np.unpackbits(np.frombuffer(data, np.uint8))[: count * bits].reshape(count, bits)
    u = np.packbits(np.pad(b, ((0, 0), (8 - bits, 0))), axis=1).reshape(-1)
    if count and int(u.max()) > 2 * qmax(bits):
        raise ArtifactError(f"a stored code {int(u.max())} is outside 0..{2 * qmax(bits)} for {bits} bits")
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
    """One tensor from its manifest entry and bytes; refuses an entry that does not fit them (docs/artifact.md)."""
    encoding, bits = meta.get("encoding"), meta.get("bits")
    if encoding == "raw":
        _expect("length", len(data), count * dtype.itemsize, f"{count} elements of {dtype}")
        return np.frombuffer(data, dtype.newbyteorder("<")).astype(dtype)
    if encoding not in ("packed", "sparse"):
        raise ArtifactError(f"unknown encoding {encoding!r} (raw, packed or sparse)")
    if bits is not None and (not _is_int(bits) or not 2 <= bits <= 8):
        raise ArtifactError(f"bits {bits!r} is not an integer 2..8")
    if (bits is not None or encoding == "packed") and dtype != np.int8:
        raise ArtifactError(f"packed codes need an INT8 initializer, this one is {dtype}")
    if encoding == "packed":
        if bits is None:
            raise ArtifactError("a packed tensor needs bits")
        _expect("length", len(data), -(-count * bits // 8), f"{count} codes of {bits} bits")
        return _unpack(data, count, bits)
    if bits is None and dtype != np.float32:
        raise ArtifactError(f"sparse raw values need a FLOAT initializer, this one is {dtype}")
    mask_len, nnz = meta.get("mask_len"), meta.get("nnz")
    _expect("mask_len", mask_len, -(-count // 8), f"{count} elements")
    mask = np.unpackbits(np.frombuffer(data[:mask_len], np.uint8))[:count].astype(bool)
    _expect("nnz", nnz, int(mask.sum()), "the mask's 1 bits")
    value_bytes = 4 * nnz if bits is None else -(-nnz * bits // 8)
    _expect("length", len(data), mask_len + value_bytes, f"the mask and {nnz} values")
    rest = data[mask_len:]
    values = np.frombuffer(rest, np.dtype(np.float32).newbyteorder("<")) if bits is None else _unpack(rest, nnz, bits)
    out = np.zeros(count, dtype=dtype)
    out[mask] = values
    return out


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _expect(key: str, value: object, wanted: int, why: str) -> None:
    if not _is_int(value) or value != wanted:
        raise ArtifactError(f"{key} is {value!r}, {why} take {wanted}")


def write(proto: onnx.ModelProto, path: str | Path, packed_bits: dict[str, int], deflate: bool = True) -> int:
    """Write ``proto`` as an ``.acz`` file; return its size in bytes. ``deflate=False`` stores
    the entries as they are: a file only timed, whose bytes nobody counts (any zip reader and
    ``load_model`` read both)."""
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

    def zip_to(tmp: Path) -> None:
        method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
        with zipfile.ZipFile(tmp, "w", compression=method, compresslevel=9 if deflate else None) as zf:
            for name, payload in (
                ("manifest.json", json.dumps(manifest, sort_keys=True).encode()),
                ("model.onnx", graph_only.SerializeToString()),
                ("weights.bin", b"".join(blobs)),
            ):
                info = zipfile.ZipInfo(name, date_time=_DATE)
                info.compress_type = method
                zf.writestr(info, payload)

    atomic_write(path, zip_to)  # never a half-written artifact under the final name
    return path.stat().st_size


def atomic_write(path: str | Path, write: Callable[[Path], Any], part: str = ".part") -> Path:
    """Call ``write(tmp)`` on ``PATH{part}`` beside ``path``, then move it onto ``path``.

    Whatever stops the write (a full disk, Ctrl-C, a bug) removes the ``.part`` file: no debris
    is left. A full, read-only or forbidden place raises ``StorageFault`` naming ``path``, which
    ends the run in one line (``autocomp.errors``); other errors pass through unchanged.
    ``part`` differs per process where several write the same file (the report of a shared run).

    Example::

        atomic_write("trials.csv", lambda p: frame.to_csv(p, index=False))
    """
    path = Path(path)
    tmp = path.with_name(path.name + part)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # a read-only place: nothing could have been written there either
            pass
        fault = _fault_in(exc, str(path))
        if fault is not None and fault is not exc:
            raise fault from exc
        raise
    return path


def _fault_in(exc: BaseException, path: str) -> StorageFault | None:
    """The disk fault in ``exc``'s chain, naming ``path`` (a writer may wrap the ``OSError``)."""
    seen: BaseException | None = exc
    for _ in range(20):
        if seen is None or isinstance(seen, StorageFault):
            return seen
        if isinstance(seen, OSError) and (fault := os_fault(seen, path)) is not None:
            return fault
        seen = seen.__cause__ or seen.__context__
    return None


def load_model(path: str | Path) -> onnx.ModelProto:
    """Expand an ``.acz`` file into an ordinary ONNX model.

    A file that is not a valid artifact (docs/artifact.md) is refused with an ``ArtifactError``
    whose one-line message names the file, the tensor and what is wrong; nothing is guessed.
    """
    manifest, proto, weights = _read(path)
    inits = {i.name: i for i in proto.graph.initializer}
    done: set[str] = set()
    for k, entry in enumerate(manifest["tensors"]):
        name = entry.get("name") if isinstance(entry, dict) else None
        where = f"{path}: manifest tensor {k} ({name!r})"
        if name not in inits:
            raise ArtifactError(f"{where}: model.onnx has no initializer of that name")
        if name in done:
            raise ArtifactError(f"{where}: listed twice")
        done.add(name)
        init = inits[name]
        offset, length = entry.get("offset"), entry.get("length")
        if not (_is_int(offset) and _is_int(length) and offset >= 0 and length >= 0
                and offset + length <= len(weights)):
            raise ArtifactError(f"{where}: bytes {offset!r}+{length!r} are not inside weights.bin "
                                f"({len(weights)} bytes)")
        try:
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(init.data_type))
        except (KeyError, ValueError, TypeError):
            raise ArtifactError(f"{where}: initializer data_type {init.data_type} is not an ONNX tensor type") from None
        count = int(np.prod(init.dims)) if init.dims else 1
        try:
            arr = _decode(entry, weights[offset : offset + length], dtype, count)
        except ArtifactError as e:
            raise ArtifactError(f"{where}: {e}") from None
        init.CopyFrom(numpy_helper.from_array(arr.reshape(tuple(init.dims)), init.name))
    missing = [name for name in inits if name not in done]
    if missing:
        raise ArtifactError(f"{path}: initializer {missing[0]!r} has no manifest entry, so no data "
                            f"({len(missing)} such)")
    return proto


def _read(path: str | Path) -> tuple[dict, onnx.ModelProto, bytes]:
    """The three entries of an ``.acz`` file, each checked to be what it says it is."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            absent = [n for n in ("manifest.json", "model.onnx", "weights.bin") if n not in names]
            if absent:
                raise ArtifactError(f"{path}: not an autocomp artifact (no {', '.join(absent)} in the ZIP)")
            manifest_text, model, weights = zf.read("manifest.json"), zf.read("model.onnx"), zf.read("weights.bin")
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no such file") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as e:
        raise ArtifactError(f"{path}: not an autocomp artifact (not a readable ZIP file: {e})") from None
    try:
        manifest = json.loads(manifest_text)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{path}: manifest.json is not JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise ArtifactError(f"{path}: not an autocomp artifact of version {VERSION}")
    if not isinstance(manifest.get("tensors"), list):
        raise ArtifactError(f"{path}: manifest.json has no list of tensors")
    try:
        proto = onnx.load_from_string(model)
    except Exception as e:  # protobuf's DecodeError, whose module path differs between implementations
        raise ArtifactError(f"{path}: model.onnx is not an ONNX model ({type(e).__name__})") from None
    return manifest, proto, weights


def to_bytes(path: str | Path) -> bytes:
    """The expanded model serialized as plain ONNX (what ``export --format onnx`` writes)."""
    buf = io.BytesIO()
    onnx.save(load_model(path), buf)
    return buf.getvalue()
