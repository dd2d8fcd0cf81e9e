from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from autocomp.artifact.container import _pack, _unpack, load_model, write


@pytest.mark.parametrize("bits", range(2, 9))
def test_pack_round_trips_every_code(bits: int) -> None:
    q = 2 ** (bits - 1) - 1
    codes = np.arange(-q, q + 1, dtype=np.int8).repeat(3)
    packed = _pack(codes, bits)
    assert len(packed) == -(-len(codes) * bits // 8)  # exactly `bits` bits per code
    assert np.array_equal(_unpack(packed, len(codes), bits), codes)


def _model(weight: np.ndarray, name: str = "w") -> onnx.ModelProto:
    node = helper.make_node("Identity", [name], ["out"])
    graph = helper.make_graph([node], "g", [], [helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, None)],
                              initializer=[numpy_helper.from_array(weight, name)])
    return helper.make_model(graph)


def test_sparse_float_weights_shrink_the_file_and_load_back_exactly(tmp_path) -> None:
    rng = np.random.default_rng(0)
    dense = rng.standard_normal((64, 64)).astype(np.float32)
    sparse = dense * (rng.random(dense.shape) < 0.1)
    size_dense = write(_model(dense), tmp_path / "d.acz", {})
    size_sparse = write(_model(sparse), tmp_path / "s.acz", {})
    assert size_sparse < 0.25 * size_dense  # 10% nonzeros: mask + values
    back = numpy_helper.to_array(load_model(tmp_path / "s.acz").graph.initializer[0])
    assert np.array_equal(back, sparse)


def test_packed_int8_codes_load_back_exactly(tmp_path) -> None:
    codes = np.random.default_rng(1).integers(-7, 8, size=(32, 16)).astype(np.int8)
    size4 = write(_model(codes, "w_quantized"), tmp_path / "q4.acz", {"w_quantized": 4})
    size8 = write(_model(codes, "w_quantized"), tmp_path / "q8.acz", {"w_quantized": 8})
    assert size4 < size8
    back = numpy_helper.to_array(load_model(tmp_path / "q4.acz").graph.initializer[0])
    assert back.dtype == np.int8 and np.array_equal(back, codes)


def test_same_model_gives_same_bytes(tmp_path) -> None:
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    write(_model(w), tmp_path / "a.acz", {})
    write(_model(w), tmp_path / "b.acz", {})
    assert (tmp_path / "a.acz").read_bytes() == (tmp_path / "b.acz").read_bytes()
    assert not list(tmp_path.glob("*.part"))


def test_foreign_zip_is_refused(tmp_path) -> None:
    import zipfile

    with zipfile.ZipFile(tmp_path / "x.acz", "w") as zf:
        zf.writestr("manifest.json", '{"format": "other", "version": 1}')
    with pytest.raises(ValueError, match="not an autocomp artifact"):
        load_model(tmp_path / "x.acz")


# --- files that are not valid artifacts: each refused in one line naming what is wrong -------------

def _four_encodings(tmp_path: Path) -> Path:
    """A valid artifact with one tensor of each encoding: raw, packed, sparse float, sparse packed."""
    rng = np.random.default_rng(2)
    tensors = {"bias": rng.standard_normal(8).astype(np.float32),
               "w_quantized": rng.integers(-7, 8, size=(16, 4)).astype(np.int8),
               "sparse": (rng.standard_normal((16, 16)) * (rng.random((16, 16)) < 0.1)).astype(np.float32),
               "sparse_quantized": (rng.integers(-7, 8, size=(16, 16)) * (rng.random((16, 16)) < 0.1)).astype(np.int8)}
    nodes = [helper.make_node("Identity", [n], [f"{n}_out"]) for n in tensors]
    graph = helper.make_graph(nodes, "g", [], [helper.make_tensor_value_info(f"{n}_out", onnx.TensorProto.FLOAT, None)
                                               for n in tensors],
                              initializer=[numpy_helper.from_array(a, n) for n, a in tensors.items()])
    path = tmp_path / "ok.acz"
    write(helper.make_model(graph), path, {"w_quantized": 4, "sparse_quantized": 4})
    back = {i.name: numpy_helper.to_array(i) for i in load_model(path).graph.initializer}
    assert all(np.array_equal(back[n], a) for n, a in tensors.items())
    return path


def _rewrite(src, dst, change) -> None:
    """Copy artifact ``src`` to ``dst`` after ``change(parts, tensors_by_name, manifest)``, which edits
    the manifest in place or replaces/deletes raw entries of ``parts``."""
    import json
    import zipfile

    with zipfile.ZipFile(src) as zf:
        parts = {n: zf.read(n) for n in zf.namelist()}
    manifest = json.loads(parts["manifest.json"])
    assert {t["encoding"] for t in manifest["tensors"]} == {"raw", "packed", "sparse"}
    original = parts["manifest.json"]
    change(parts, {t["name"]: t for t in manifest["tensors"]}, manifest)
    if parts.get("manifest.json") == original:
        parts["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(dst, "w") as zf:
        for name, data in parts.items():
            zf.writestr(name, data)


def _set(name: str, key: str, value):  # noqa: ANN202
    def change(parts, tensors, manifest):  # noqa: ANN001, ANN202
        tensors[name][key] = value
    return change


def _code_out_of_range(parts, tensors, manifest) -> None:  # noqa: ANN001
    t = tensors["w_quantized"]  # 4 bits: stored codes 0..14; 15 (all ones) is no code
    w = bytearray(parts["weights.bin"])
    w[t["offset"]] |= 0xF0
    parts["weights.bin"] = bytes(w)


def _drop_entry(parts, tensors, manifest) -> None:  # noqa: ANN001
    manifest["tensors"] = [t for t in manifest["tensors"] if t["name"] != "bias"]


def _twice(parts, tensors, manifest) -> None:  # noqa: ANN001
    manifest["tensors"].append(dict(tensors["bias"]))


def _truncate(parts, tensors, manifest) -> None:  # noqa: ANN001
    parts["weights.bin"] = parts["weights.bin"][:-3]


def _no_weights(parts, tensors, manifest) -> None:  # noqa: ANN001
    del parts["weights.bin"]


def _bad_json(parts, tensors, manifest) -> None:  # noqa: ANN001
    parts["manifest.json"] = b"{not json"


def _bad_model(parts, tensors, manifest) -> None:  # noqa: ANN001
    parts["model.onnx"] = b"\xff\xff\xff garbage"


def _no_tensor_list(parts, tensors, manifest) -> None:  # noqa: ANN001
    manifest["tensors"] = {"bias": 1}


CORRUPT = {
    "unknown encoding": (_set("bias", "encoding", "zstd"), "unknown encoding 'zstd'"),
    "raw length": (_set("bias", "length", 31), "length is 31, 8 elements of float32 take 32"),
    "packed bits": (_set("w_quantized", "bits", 9), "bits 9 is not an integer 2..8"),
    "packed length": (_set("w_quantized", "bits", 3), "length is 32, 64 codes of 3 bits take 24"),
    "packed without bits": (_set("w_quantized", "bits", None), "packed tensor needs bits"),
    "code out of range": (_code_out_of_range, "stored code 15 is outside 0..14 for 4 bits"),
    "sparse mask_len": (_set("sparse", "mask_len", 31), "mask_len is 31, 256 elements take 32"),
    "sparse nnz": (_set("sparse", "nnz", 1), "nnz is 1, the mask's 1 bits take"),
    "sparse nnz type": (_set("sparse", "nnz", "3"), "nnz is '3'"),
    "sparse float on int8": (_set("sparse_quantized", "bits", None), "sparse raw values need a FLOAT initializer"),
    "packed on float": (_set("sparse", "bits", 4), "packed codes need an INT8 initializer"),
    "outside weights.bin": (_set("bias", "offset", 10**6), "are not inside weights.bin"),
    "negative offset": (_set("bias", "offset", -1), "are not inside weights.bin"),
    "truncated weights.bin": (_truncate, "are not inside weights.bin"),
    "no manifest entry": (_drop_entry, "initializer 'bias' has no manifest entry"),
    "unknown tensor name": (_set("bias", "name", "nope"), "model.onnx has no initializer of that name"),
    "tensor listed twice": (_twice, "listed twice"),
    "no weights.bin": (_no_weights, "no weights.bin in the ZIP"),
    "manifest not JSON": (_bad_json, "manifest.json is not JSON"),
    "model not ONNX": (_bad_model, "model.onnx is not an ONNX model"),
    "tensors not a list": (_no_tensor_list, "no list of tensors"),
}


@pytest.mark.parametrize("case", CORRUPT)
def test_invalid_artifact_is_refused_in_one_line(tmp_path, case: str) -> None:
    from autocomp.errors import ArtifactError

    change, words = CORRUPT[case]
    bad = tmp_path / "bad.acz"
    _rewrite(_four_encodings(tmp_path), bad, change)
    with pytest.raises(ArtifactError) as err:
        load_model(bad)
    message = str(err.value)
    assert words in message and str(bad) in message and "\n" not in message


def test_untouched_rewrite_still_loads(tmp_path) -> None:
    """The corruption cases above differ from a valid file only by their change."""
    ok = tmp_path / "same.acz"
    _rewrite(_four_encodings(tmp_path), ok, lambda parts, tensors, manifest: None)
    assert len(load_model(ok).graph.initializer) == 4


@pytest.mark.parametrize("content", [None, b"", b"PK\x03\x04 not really a zip", b"plain text"])
def test_a_file_that_is_no_zip_is_refused(tmp_path, content: bytes | None) -> None:
    from autocomp.artifact import open_session
    from autocomp.errors import ArtifactError

    path = tmp_path / "x.acz"
    if content is not None:
        path.write_bytes(content)
    words = "no such file" if content is None else "not a readable ZIP file"
    with pytest.raises(ArtifactError, match=words):
        open_session(path)
