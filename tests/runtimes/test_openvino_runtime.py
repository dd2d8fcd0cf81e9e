"""OpenVINO: the same QDQ graph runs there (int8 as int8, fp32 as fp32), and the IR export is that graph.

OpenVINO runs only in its own process: this one (pytest's) never loads it, which is what lets
the suite fork in any order. Code that must touch OpenVINO directly runs there via ``beside``.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
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
from autocomp.runtimes import RuntimeOptions, _openvino, beside, get_runtime, require

pytestmark = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                reason='OpenVINO is not installed (pip install -e ".[openvino]"; CI installs it)')
HAS_OV = importlib.util.find_spec("openvino") is not None


# Run inside OpenVINO's process (beside): module-level, so that process imports them by name.
def compiled_shapes(session) -> list[tuple]:  # noqa: ANN001
    return beside(_shapes, [session])


def _shapes(sessions: list) -> list[tuple]:
    return list(sessions[0]._compiled)


def ir_outputs(xml: Path, config: dict, xs: np.ndarray) -> np.ndarray:
    """The IR compiled by OpenVINO itself, not through autocomp's session."""
    import openvino as ov

    return ov.Core().compile_model(xml, "CPU", config)(xs)[0]


def save_on_a_full_disk(model: bytes, out: Path) -> None:
    import openvino as ov

    from autocomp.runtimes import _ov_worker

    def broken(model, out, compress_to_fp16=True):  # noqa: ANN001, ANN202
        Path(out).write_text("half")
        raise RuntimeError("disk full")

    saved, ov.save_model = ov.save_model, broken
    try:
        _ov_worker.save_ir(model, out)
    finally:
        ov.save_model = saved


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
    assert record["runtime"] == "openvino" and record["version"] == get_runtime("openvino").version()
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


@pytest.mark.skipif(not HAS_OV or "BF16" not in _openvino._capabilities(),
                    reason="this CPU has no bf16 units for OpenVINO")
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
    assert compiled_shapes(session) == [(4, 1, 8, 8)]  # the latency batch, compiled at open
    xs = x.numpy()
    whole = session.run(None, {"input": xs[:7]})[0]
    singles = np.concatenate([session.run(None, {"input": xs[i : i + 1]})[0] for i in range(7)])
    assert np.allclose(whole, singles, atol=1e-5)
    for n in (2, 3, 5):
        session.run(None, {"input": xs[:n]})
    shapes = compiled_shapes(session)
    assert len(shapes) == 4 and (4, 1, 8, 8) not in shapes  # MAX_SHAPES
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
    xs = x.numpy()
    own = _openvino.HOST.call(ir_outputs, xml, _openvino.compile_config(), xs)
    assert np.array_equal(own, session.run(None, {"input": xs})[0])
    assert not list(tmp_path.glob(".autocomp-ir-*"))  # its temporary folder is gone
    y = np.zeros(len(xs), dtype=np.int64)
    assert session_accuracy(get_runtime("openvino").open_file(xml), xs, y) == session_accuracy(session, xs, y)


def test_a_failed_ir_write_leaves_nothing(x, tmp_path: Path) -> None:
    from tiny_models import tiny_cnn

    from autocomp.artifact import to_bytes

    torch.manual_seed(0)
    path = _artifact(tiny_cnn().eval(), x, tmp_path / "m.acz")

    with pytest.raises(RuntimeError, match="disk full"):
        _openvino.HOST.call(save_on_a_full_disk, to_bytes(path), tmp_path / "model.xml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.acz"]


def test_measure_and_layer_costs_on_openvino(x, tiny_data, tmp_path: Path) -> None:
    from tiny_models import tiny_cnn

    from autocomp.measure.layer_cost import layer_costs
    from autocomp.methods.structured import ChannelPruneConfig

    torch.manual_seed(0)
    model = tiny_cnn().eval()
    path = _artifact(model, x, tmp_path / "m.acz")
    config = MeasureConfig(min_runs=10, min_seconds=0.0, runtime="openvino")
    m = measure_artifact(path, (x.numpy(), tiny_data.val_y.numpy()), config,
                         teacher_session=open_session(path, runtime="openvino"))
    assert m.runtime.startswith("OpenVINO ") and m.latency_ratio_low <= m.latency_ratio <= m.latency_ratio_high
    costs = layer_costs(model, x[:1], {("3", "channel_ratio"): [0.5]}, {"channel_ratio": ChannelPruneConfig.variant},
                        config)
    ratio = costs[("3", "channel_ratio")][0.5]
    assert ratio is not None and ratio.low <= ratio.median <= ratio.high


def test_each_written_file_reports_its_own_kernels(x, tmp_path: Path) -> None:
    """The record of an exported IR lists the precisions its own compiled model runs (read from
    OpenVINO's runtime graph, before any run): u8/i8 for the int8 file, none for the fp32 teacher."""
    from tiny_models import TinyResidual

    from autocomp.artifact import to_bytes

    torch.manual_seed(0)
    model = TinyResidual().eval()
    runtime = get_runtime("openvino")
    executed = {}
    for name, bits in (("teacher", None), ("int8", 8)):
        path = _artifact(model, x, tmp_path / f"{name}.acz", bits=bits)
        (tmp_path / name).mkdir()
        xml = runtime.save(to_bytes(path), tmp_path / name / "model.xml")[0]
        record = runtime.open_file(xml, RuntimeOptions()).describe()
        executed[name] = {p for kinds in record["executed"].values() for p in kinds}
    assert executed["int8"] & {"u8", "i8"} and executed["teacher"] == {"f32"}, executed


FORK_AFTER_OPENVINO = """
import io, os, sys
import numpy as np, torch
from autocomp.measure.latency import paired_rounds
from autocomp.runtimes import RuntimeOptions, get_runtime
net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(144, 10)).eval()
f = io.BytesIO()
torch.onnx.export(net, torch.randn(1, 1, 8, 8), f, input_names=["input"], dynamo=False,
                  dynamic_axes={"input": {0: "batch"}})
runtime = get_runtime("openvino")
sessions = [runtime.open(f.getvalue(), RuntimeOptions()) for _ in range(2)]
sessions[0].run(None, {"input": np.zeros((4, 1, 8, 8), np.float32)})
assert sessions[0].describe()["executed"]
paired_rounds(sessions, (1, 8, 8), min_runs=5, min_seconds=0.0)
runtime.save(f.getvalue(), __import__("pathlib").Path(sys.argv[1]) / "m.xml")
assert "openvino" not in sys.modules, "OpenVINO was loaded into the caller's process"
loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(64, 3)), batch_size=8,
                                     num_workers=2, multiprocessing_context="fork")
assert sum(len(b[0]) for b in loader) == 64
pid = os.fork()
if pid == 0:
    os._exit(0)
assert os.waitpid(pid, 0)[1] == 0
print("forked fine")
"""


@pytest.mark.e2e  # a whole search in a child process (6 s): with the e2e tests
def test_the_caller_never_loads_openvino_so_it_may_fork(tmp_path: Path) -> None:
    """Open, run, describe, time and save on OpenVINO, then fork DataLoader workers and a child:
    OpenVINO ran in its own process, so none of it is in this one (a fresh interpreter, so no
    other test's imports count)."""
    done = subprocess.run([sys.executable, "-c", FORK_AFTER_OPENVINO, str(tmp_path)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and "forked fine" in done.stdout, done.stderr[-3000:]
