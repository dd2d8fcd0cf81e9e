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
