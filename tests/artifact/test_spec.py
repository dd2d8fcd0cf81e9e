"""docs/artifact.md is enough to load an artifact.

``decode`` below is written from that page alone and imports nothing from autocomp. It decodes
artifacts that together hold every encoding (raw, packed at 2 to 8 bits, sparse float32, sparse
packed), and the decoded models must give exactly the package loader's outputs in ONNX Runtime
and the accuracy autocomp reports for the file.
"""

from __future__ import annotations

import json
import math
import re
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper, numpy_helper

DOC = Path(__file__).resolve().parents[2] / "docs" / "artifact.md"


# -- the decoder, from docs/artifact.md only -------------------------------------------------------------
def _bits(data: bytes, n: int, msb_first: bool = True) -> list[int]:
    """The first ``n`` bits of a bit stream (doc section 4: each byte's 0x80 bit first)."""
    order = range(7, -1, -1) if msb_first else range(8)
    out = [(byte >> i) & 1 for byte in data for i in order]
    assert len(out) >= n, "stream shorter than its count"
    return out[:n]


def _codes(data: bytes, n: int, b: int, msb_first: bool = True) -> np.ndarray:
    """``n`` codes of ``b`` bits: u read most significant bit first, c = u - q."""
    assert 2 <= b <= 8 and len(data) == math.ceil(n * b / 8)
    bits, q = _bits(data, n * b, msb_first), 2 ** (b - 1) - 1
    u = [int("".join(map(str, bits[k * b:(k + 1) * b])), 2) for k in range(n)]
    assert not msb_first or all(0 <= x <= 2 * q for x in u)
    return np.array([x - q for x in u], dtype=np.int8)


def decode(path: Path, msb_first: bool = True) -> onnx.ModelProto:
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == ["manifest.json", "model.onnx", "weights.bin"]
        manifest = json.loads(zf.read("manifest.json").decode("utf-8"))
        model = onnx.ModelProto.FromString(zf.read("model.onnx"))
        blob = zf.read("weights.bin")
    assert manifest["format"] == "autocomp-acz" and manifest["version"] == 1
    inits = {i.name: i for i in model.graph.initializer}
    assert [t["name"] for t in manifest["tensors"]] == list(inits)  # one entry per initializer, same order
    for entry in manifest["tensors"]:
        init = inits[entry["name"]]
        assert not init.raw_data and not init.float_data and not init.int32_data  # stripped, dims kept
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(init.data_type))
        count = int(np.prod(init.dims)) if init.dims else 1
        data = blob[entry["offset"]:entry["offset"] + entry["length"]]
        assert len(data) == entry["length"]  # length in bytes
        if entry["encoding"] == "raw":
            assert len(data) == count * dtype.itemsize
            flat = np.frombuffer(data, dtype.newbyteorder("<"))
        elif entry["encoding"] == "packed":
            assert dtype == np.int8
            flat = _codes(data, count, entry["bits"], msb_first)
        else:
            assert entry["encoding"] == "sparse" and entry["mask_len"] == math.ceil(count / 8)
            mask = np.array(_bits(data[:entry["mask_len"]], count), dtype=bool)
            assert int(mask.sum()) == entry["nnz"]
            rest = data[entry["mask_len"]:]
            if entry["bits"] is None:
                assert dtype == np.float32 and len(rest) == 4 * entry["nnz"]
                values = np.frombuffer(rest, "<f4")
            else:
                values = _codes(rest, entry["nnz"], entry["bits"], msb_first)
            assert np.all(values != 0)
            flat = np.zeros(count, dtype)
            flat[mask] = values
        array = np.asarray(flat, dtype=dtype).reshape(tuple(init.dims))
        init.CopyFrom(numpy_helper.from_array(array, init.name))
    return model


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


# -- artifacts holding every encoding -----------------------------------------------------------------
def _data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (512,), generator=gen)
    x = torch.randn(512, 1, 8, 8, generator=gen) * 0.3
    x[torch.arange(len(y)), 0, y % 8, y // 8 * 4] += 2.0
    return x, y


# name -> (per-layer settings of wide_mlp's Linear layers "1", "3", "5", quant mode)
PLANS = {
    "float": ({}, "qat"),
    "packed_2_3_4": ({"1": {"bits": 2}, "3": {"bits": 3}, "5": {"bits": 4}}, "qat"),
    "packed_5_6_7": ({"1": {"bits": 5}, "3": {"bits": 6}, "5": {"bits": 7}}, "qat"),
    "packed_8_and_sparse": ({"1": {"bits": 8}, "3": {"sparsity": 0.9}, "5": {"bits": 4, "sparsity": 0.9}}, "qat"),
    "dynamic_sparse_packed": ({"1": {"bits": 8}, "3": {"bits": 6, "sparsity": 0.8}}, "dynamic"),
}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], np.ndarray, np.ndarray]:
    from tiny_models import wide_mlp

    from autocomp.artifact import export
    from autocomp.pipeline.compress import apply
    from autocomp.plan import LayerPlan, Plan

    x, y = _data()
    model = wide_mlp().train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(150):  # trained, so a wrong bit order shows as lost accuracy
        idx = torch.arange(step * 32, step * 32 + 32) % 384
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    tmp, paths = tmp_path_factory.mktemp("spec"), {}
    for name, (layers, mode) in PLANS.items():
        plan = Plan(layers={k: LayerPlan(**v) for k, v in layers.items()}, quant_mode=mode)
        paths[name] = tmp / f"{name}.acz"
        export(apply(model, plan, x[:1]), x[:1], [x[:64].numpy()], paths[name], mode)
    paths["dense_2_bit"] = _dense_two_bit(tmp / "dense_2_bit.acz")
    return paths, x[384:].numpy(), y[384:].numpy()


def _dense_two_bit(path: Path) -> Path:
    """Trained 2-bit layers are mostly zeros, so the writer stores them sparse. This one is dense:
    codes +1 on each class's bright pixel (see ``_data``), -1 everywhere else; the -1s add the
    same sum to every logit, so the arg-max still reads the class. Written by the package's writer."""
    from autocomp.artifact.container import write

    codes = -np.ones((64, 10), np.int8)
    for c in range(10):
        codes[(c % 8) * 8 + c // 8 * 4, c] = 1
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"]),
         helper.make_node("DequantizeLinear", ["w_quantized", "w_scale", "w_zero_point"], ["w"]),
         helper.make_node("MatMul", ["flat", "w"], ["mm"]), helper.make_node("Add", ["mm", "b"], ["logits"])],
        "dense2", [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", 10])],
        initializer=[numpy_helper.from_array(codes, "w_quantized"),
                     numpy_helper.from_array(np.array(0.5, np.float32), "w_scale"),
                     numpy_helper.from_array(np.array(0, np.int8), "w_zero_point"),
                     numpy_helper.from_array(np.linspace(0, 0.01, 10, dtype=np.float32), "b")])
    write(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path, {"w_quantized": 2})
    return path


def _encodings(path: Path) -> set[tuple[str, int | None]]:
    with zipfile.ZipFile(path) as zf:
        tensors = json.loads(zf.read("manifest.json"))["tensors"]
    return {(t["encoding"], t.get("bits")) for t in tensors}


def test_the_artifacts_hold_every_encoding(artifacts) -> None:
    paths, _, _ = artifacts
    seen = set().union(*(_encodings(p) for p in paths.values()))
    assert {("raw", None), ("sparse", None)} | {("packed", b) for b in range(2, 9)} <= seen
    assert any(enc == "sparse" and bits for enc, bits in seen)


@pytest.mark.parametrize("name", sorted([*PLANS, "dense_2_bit"]))
def test_the_spec_decoder_gives_the_package_loader_s_model_and_the_reported_accuracy(artifacts, name) -> None:
    from autocomp.artifact import load_model, open_session
    from autocomp.measure import MeasureConfig, measure_artifact

    paths, val_x, val_y = artifacts
    ours = decode(paths[name])
    theirs = {i.name: numpy_helper.to_array(i) for i in load_model(paths[name]).graph.initializer}
    for init in ours.graph.initializer:
        mine = numpy_helper.to_array(init)
        assert mine.dtype == theirs[init.name].dtype and np.array_equal(mine, theirs[init.name]), init.name
    logits = _session(ours).run(None, {"input": val_x})[0]
    assert np.array_equal(logits, open_session(paths[name]).run(None, {"input": val_x})[0])
    reported = measure_artifact(paths[name], (val_x, val_y), MeasureConfig(min_runs=1, min_seconds=0.0)).accuracy
    accuracy = 100.0 * float((logits.argmax(axis=1) == val_y).mean())
    assert accuracy == pytest.approx(reported, abs=1e-9)
    assert accuracy > 40  # a trained model: chance is 10 %


def test_least_significant_bit_first_is_caught(artifacts) -> None:
    """The mistake an independent loader made: it loads and runs, with wrong weights."""
    paths, val_x, _ = artifacts
    right = _session(decode(paths["packed_5_6_7"])).run(None, {"input": val_x})[0]
    wrong = _session(decode(paths["packed_5_6_7"], msb_first=False)).run(None, {"input": val_x})[0]
    assert not np.allclose(right, wrong, atol=1e-3)


def test_the_document_s_examples_are_what_the_writer_writes() -> None:
    from autocomp.artifact.container import _encode, _pack

    text = DOC.read_text()
    assert re.search(r"^## 1\. The container", text, re.M) and '"version": 1' in text
    assert _pack(np.array([-3, 0, 3, 1], np.int8), 3) == bytes.fromhex("0f40") and "`0F 40`" in text
    assert _codes(bytes.fromhex("0f40"), 4, 3).tolist() == [-3, 0, 3, 1]
    meta, data = _encode(np.array([0, 1.5, 0, 0, 0, 0, 0, 0, 2.0], np.float32), None)
    assert meta == {"encoding": "sparse", "bits": None, "nnz": 2, "mask_len": 2} and len(data) == 10
    assert data.hex() == "40800000c03f00000040" and "`40 80`" in text and "`00 00 c0 3f`" in text
    meta, data = _encode(np.array([0] * 30 + [3, -1], np.int8), 3)
    assert meta == {"encoding": "sparse", "bits": 3, "nnz": 2, "mask_len": 4} and data.hex() == "00000003c8"
    assert "`00 00 00 03`" in text and "`c8`" in text


@pytest.mark.e2e
def test_a_search_s_artifacts_decoded_from_the_spec_score_their_reported_accuracy(tmp_path: Path) -> None:
    import optuna

    from autocomp.cli import main
    from autocomp.config import SearchConfig
    from autocomp.pipeline.setup import prepare
    from autocomp.study.records import study_attr

    assert main(["search", "--run-dir", str(tmp_path / "run"), "--study-name", "e", "--teacher-epochs", "3",
                 "--n-trials", "8", "--no-progress", "--baselines", "teacher,int4,prune90",
                 "--no-profile"]) == 0  # sampled plans: the decoder meets mixed bits and masks without its cost
    study = optuna.load_study(study_name="e", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    stored = study_attr(study, "config")
    _, data = prepare(SearchConfig(**{k: tuple(v) if k == "baselines" else v for k, v in stored.items()}),
                      log=lambda s: None)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) >= 3
    for trial in done:
        logits = _session(decode(Path(trial.user_attrs["artifact"]))).run(None, {"input": data.val_x.numpy()})[0]
        accuracy = 100.0 * float((logits.argmax(axis=1) == data.val_y.numpy()).mean())
        assert accuracy == pytest.approx(trial.user_attrs["metrics"]["accuracy"], abs=1e-9), trial.number
