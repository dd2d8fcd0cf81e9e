"""OpenVINO: the same QDQ graph runs there (int8 as int8, fp32 as fp32), and the IR export is that graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from autocomp.artifact import export, open_session
from autocomp.errors import AutocompError
from autocomp.measure import MeasureConfig, measure_artifact, session_accuracy
from autocomp.models.layers import compute_layers
from autocomp.pipeline.compress import apply
from autocomp.plan import LayerPlan, Plan
from autocomp.runtimes import RuntimeOptions, get_runtime, require

ov = pytest.importorskip("openvino", reason='OpenVINO is not installed (pip install -e ".[openvino]"; CI installs it)')

from autocomp.runtimes import _openvino  # noqa: E402 - after the skip: it is only useful with openvino


def _artifact(model: torch.nn.Module, x: torch.Tensor, path: Path, bits: int | None = None) -> Path:
    plan = Plan(layers={n: LayerPlan(bits=bits) for n in compute_layers(model)}) if bits else Plan()
    export(apply(model, plan, x[:1]), x[:1], [x[:32].numpy()], path)
    return path


@pytest.fixture
def x(tiny_data) -> torch.Tensor:
    return tiny_data.val_x


def test_fp32_runs_fp32_and_matches_onnxruntime(tiny_model, x, tmp_path: Path) -> None:
    path = _artifact(tiny_model, x, tmp_path / "m.acz")
    session = open_session(path, runtime="openvino")
    got = session.run(None, {"input": x.numpy()})[0]
    want = open_session(path).run(None, {"input": x.numpy()})[0]
    assert np.allclose(got, want, atol=1e-4, rtol=1e-4)
    record = session.describe()
    assert record["runtime"] == "openvino" and record["version"] == ov.get_version()
    assert record["properties"]["INFERENCE_PRECISION_HINT"] == "f32"  # explicit, whatever the CPU's default
    assert record["threads"] == 1 and record["streams"] == 1 and record["properties"]["PERFORMANCE_HINT"] == "LATENCY"
    executed = {p for kinds in record["executed"].values() for p in kinds}
    assert executed == {"f32"}, record["executed"]


def test_int8_layers_run_on_int8_kernels(x, tmp_path: Path) -> None:
    from tiny_models import TinyResidual

    torch.manual_seed(0)
    model = TinyResidual().eval()
    path = _artifact(model, x, tmp_path / "q.acz", bits=8)
    session = open_session(path, runtime="openvino")
    executed = session.describe()["executed"]
    convs = executed.get("Convolution", {})
    assert set(convs) <= {"u8", "i8"} and sum(convs.values()) >= 3, executed  # stem, conv_a, proj (+ dw)
    got = session.run(None, {"input": x.numpy()})[0]
    want = open_session(path).run(None, {"input": x.numpy()})[0]
    # Two int8 implementations of one graph: rounding may differ in the last code, not in the answer.
    scale = np.abs(want).max()
    assert np.abs(got - want).max() <= 0.05 * scale
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.95


@pytest.mark.skipif("BF16" not in _openvino._capabilities(), reason="this CPU has no bf16 units for OpenVINO")
def test_reduced_precision_only_when_asked(x, tmp_path: Path) -> None:
    from tiny_models import tiny_cnn

    torch.manual_seed(0)
    path = _artifact(tiny_cnn().eval(), x, tmp_path / "m.acz")
    record = open_session(path, runtime="openvino", precision="bf16").describe()
    assert record["precision"] == "bf16" and record["properties"]["INFERENCE_PRECISION_HINT"] == "bf16"
    assert "bf16" in record["executed"]["Convolution"]
    # The reason precision is explicit: left to itself OpenVINO's CPU plugin picks bf16 here.
    plain = get_runtime("openvino").open_file(_ir(path, tmp_path), None)
    plain.run(None, {"input": x[:1].numpy()})
    assert plain.describe()["precision"] == "bf16 (runtime default)"


def test_a_precision_the_cpu_lacks_is_one_line(monkeypatch) -> None:
    monkeypatch.setattr(_openvino, "_capabilities", lambda: ("FP32", "INT8"))
    with pytest.raises(AutocompError, match="precision bf16 is not offered by OpenVINO's CPU plugin on this CPU "
                                            "\\(it offers FP32\\)"):
        require("openvino", RuntimeOptions(precision="bf16"))


def test_each_batch_shape_is_compiled_once_and_the_oldest_dropped(x, tmp_path: Path) -> None:
    from tiny_models import tiny_cnn

    torch.manual_seed(0)
    path = _artifact(tiny_cnn().eval(), x, tmp_path / "m.acz")
    session = open_session(path, runtime="openvino", batch=4)
    assert list(session._compiled) == [(4, 1, 8, 8)]  # the latency batch, compiled at open
    xs = x.numpy()
    whole = session.run(None, {"input": xs[:7]})[0]
    singles = np.concatenate([session.run(None, {"input": xs[i : i + 1]})[0] for i in range(7)])
    assert np.allclose(whole, singles, atol=1e-5)
    for n in (2, 3, 5):
        session.run(None, {"input": xs[:n]})
    assert len(session._compiled) == _openvino.MAX_SHAPES and (4, 1, 8, 8) not in session._compiled
    assert session.run(["logits"], {"input": xs[:2]})[0].shape == (2, 10)


def _ir(path: Path, tmp_path: Path) -> Path:
    from autocomp.artifact import to_bytes

    files = get_runtime("openvino").save(to_bytes(path), tmp_path / "model.xml")
    assert [f.name for f in files] == ["model.xml", "model.bin"] and all(f.stat().st_size > 0 for f in files)
    return files[0]


def test_the_ir_is_the_measured_graph(x, tmp_path: Path) -> None:
    from tiny_models import TinyResidual

    torch.manual_seed(0)
    path = _artifact(TinyResidual().eval(), x, tmp_path / "q.acz", bits=8)
    xml = _ir(path, tmp_path)
    session = open_session(path, runtime="openvino")
    compiled = ov.Core().compile_model(xml, "CPU", _openvino.compile_config())
    xs = x.numpy()
    assert np.array_equal(compiled(xs)[0], session.run(None, {"input": xs})[0])
    assert not list(tmp_path.glob(".autocomp-ir-*"))  # its temporary folder is gone
    y = np.zeros(len(xs), dtype=np.int64)
    assert session_accuracy(get_runtime("openvino").open_file(xml), xs, y) == session_accuracy(session, xs, y)


def test_a_failed_ir_write_leaves_nothing(x, tmp_path: Path, monkeypatch) -> None:
    from tiny_models import tiny_cnn

    from autocomp.artifact import to_bytes

    torch.manual_seed(0)
    path = _artifact(tiny_cnn().eval(), x, tmp_path / "m.acz")

    def broken(model, out, compress_to_fp16=True):  # noqa: ANN001, ANN202
        Path(out).write_text("half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(ov, "save_model", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        get_runtime("openvino").save(to_bytes(path), tmp_path / "model.xml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.acz"]


def test_measure_and_layer_costs_on_openvino(x, tiny_data, tmp_path: Path) -> None:
    from tiny_models import tiny_cnn

    from autocomp.measure.layer_cost import layer_costs
    from autocomp.methods.structured import ChannelPruneConfig

    torch.manual_seed(0)
    model = tiny_cnn().eval()
    path = _artifact(model, x, tmp_path / "m.acz")
    config = MeasureConfig(min_runs=10, min_seconds=0.0, runtime="openvino")
    m = measure_artifact(path, x.numpy(), tiny_data.val_y.numpy(), config,
                         teacher_session=open_session(path, runtime="openvino"))
    assert m.runtime.startswith("OpenVINO ") and m.latency_ratio_low <= m.latency_ratio <= m.latency_ratio_high
    costs = layer_costs(model, x[:1], {("3", "channel_ratio"): [0.5]}, {"channel_ratio": ChannelPruneConfig.variant},
                        config)
    ratio = costs[("3", "channel_ratio")][0.5]
    assert ratio is not None and ratio.low <= ratio.median <= ratio.high
