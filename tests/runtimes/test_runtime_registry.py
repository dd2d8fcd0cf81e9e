"""The runtime registry: one interface, selected by name; a runtime that cannot run is one line and exit 2."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

from autocomp.artifact import export, open_session, to_bytes
from autocomp.cli import main
from autocomp.config import SearchConfig
from autocomp.errors import AutocompError
from autocomp.measure import MeasureConfig, measure_artifact
from autocomp.pipeline.compress import apply
from autocomp.plan import Plan
from autocomp.runtimes import (
    Runtime,
    RuntimeOptions,
    format_runtime,
    get_runtime,
    host_cpu,
    register,
    require,
    runtime_names,
    summary,
)
from autocomp.runtimes import base as runtimes_base
from autocomp.runtimes._onnxruntime import OnnxRuntime, OrtSession
from autocomp.study.records import study_attr


class Twin(OnnxRuntime):
    """ONNX Runtime under another name: proves the protocol goes through the registry, not ORT."""

    name = "test_twin"
    label = "Twin"
    opened = 0

    def open(self, model: bytes, options: RuntimeOptions = RuntimeOptions()) -> OrtSession:
        type(self).opened += 1
        session = super().open(model, options)
        describe = session.describe
        session.describe = lambda: {**describe(), "runtime": self.name, "label": self.label}
        return session


class Absent(Runtime):
    name = "test_absent"
    label = "Absent"
    package = "autocomp_no_such_runtime_package"
    extra = "absent"


@pytest.fixture
def fakes() -> Iterator[None]:
    register(Twin)
    register(Absent)
    Twin.opened = 0
    try:
        yield
    finally:
        for name in (Twin.name, Absent.name):
            runtimes_base._RUNTIMES.pop(name, None)


@pytest.fixture
def artifact(tiny_data, tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    from tiny_models import tiny_cnn

    torch.manual_seed(0)
    x = tiny_data.val_x
    export(apply(tiny_cnn().eval(), Plan(), x[:1]), x[:1], [x[:32].numpy()], tmp_path / "t.acz")
    return tmp_path / "t.acz", x.numpy(), tiny_data.val_y.numpy()


def test_the_three_runtimes_are_registered_and_onnxruntime_is_the_default() -> None:
    assert {"onnxruntime", "openvino", "tensorrt"} <= set(runtime_names())
    assert SearchConfig().runtime == "onnxruntime" and MeasureConfig().runtime == "onnxruntime"
    assert get_runtime("openvino").formats == {"openvino": ".xml"}
    assert format_runtime("openvino").name == "openvino" and format_runtime("onnx") is None
    with pytest.raises(AutocompError, match="unknown runtime 'nope' \\(expected onnxruntime, openvino, tensorrt"):
        get_runtime("nope")


def test_a_runtime_that_is_not_installed_names_its_extra(fakes) -> None:
    with pytest.raises(AutocompError) as info:
        require(Absent.name)
    assert str(info.value) == 'runtime test_absent: Absent is not installed (pip install -e ".[absent]")'
    with pytest.raises(AutocompError, match="precision bf16 is not offered by ONNX Runtime here"):
        require("onnxruntime", RuntimeOptions(precision="bf16"))


def test_the_protocol_measures_on_the_runtime_the_config_names(fakes, artifact) -> None:
    path, x, y = artifact
    config = MeasureConfig(min_runs=10, min_seconds=0.0, runtime=Twin.name)
    teacher = open_session(path, runtime=Twin.name)
    m = measure_artifact(path, (x, y), config, teacher_session=teacher)
    assert Twin.opened == 2  # the teacher and the trial, both on the named runtime
    assert m.runtime.startswith("Twin ") and m.latency_ratio is not None
    plain = measure_artifact(path, (x, y), MeasureConfig(min_runs=10, min_seconds=0.0))
    assert plain.runtime.startswith("ONNX Runtime ") and plain.accuracy == m.accuracy


def test_an_onnxruntime_session_is_the_inference_session_plus_describe(artifact) -> None:
    path, x, _ = artifact
    session = open_session(path, threads=2)
    assert session.get_inputs()[0].name == "input"  # InferenceSession's own API passes through
    import onnxruntime as ort

    bare = ort.InferenceSession(to_bytes(path), providers=["CPUExecutionProvider"])
    assert np.array_equal(session.run(None, {"input": x})[0], bare.run(None, {"input": x})[0])
    record = session.describe()
    assert record["runtime"] == "onnxruntime" and record["version"] == ort.__version__
    assert record["threads"] == 2 and record["precision"] == "fp32" and record["device"] == "CPU"
    assert set(record["isa"]) <= set(runtimes_base.ISA_FLAGS)


def test_summary_is_one_line_that_names_runtime_version_device_precision_and_threads() -> None:
    record = {"label": "OpenVINO", "version": "2026.4.1-22982-abc", "device": "CPU", "device_name": "Xeon",
              "isa": ["avx512_vnni", "amx_int8"], "precision": "fp32", "threads": 1, "streams": 1}
    assert summary(record) == "OpenVINO 2026.4.1 on CPU (Xeon; avx512_vnni, amx_int8), fp32, 1 thread, 1 stream"
    assert summary(None) == "ONNX Runtime on CPU"  # a study made before runtimes were recorded
    assert "2 threads" in summary({**record, "threads": 2, "streams": None})


def test_host_cpu_reads_the_flags_that_pick_kernels() -> None:
    cpu = host_cpu()
    assert cpu["arch"] and isinstance(cpu["cpu"], str)
    if Path("/proc/cpuinfo").is_file():
        flags = set(" ".join(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                             if line.startswith(("flags", "Features"))).split())
        assert cpu["isa"] == [f for f in runtimes_base.ISA_FLAGS if f in flags]


def test_identity_keeps_runtimes_apart_and_old_studies_resumable() -> None:
    assert SearchConfig().identity()["runtime"] is None and SearchConfig().identity()["precision"] is None
    assert SearchConfig(runtime="openvino").identity()["runtime"] == "openvino"
    assert SearchConfig(runtime="openvino", precision="bf16").identity()["precision"] == "bf16"
    with pytest.raises(AutocompError, match="precision: must be one of fp32, bf16, fp16"):
        SearchConfig(precision="int4")


# -- the command line ---------------------------------------------------------------------------------
SEARCH = ["search", "--run-dir", "run", "--study-name", "s", "--no-profile", "--teacher-epochs", "1", "--n-trials", "1",
          "--no-progress"]


def _refused(argv: list[str], folder: Path, words: str, capsys: pytest.CaptureFixture) -> None:
    before = set(folder.rglob("*"))
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err[-2000:]
    assert len(err.splitlines()) == 1 and err.startswith("autocomp: error: ") and words in err, err
    assert set(folder.rglob("*")) == before, "wrote something"


CASES = {
    "unknown runtime": (["--runtime", "tflite"], "runtime: must be one of onnxruntime, openvino, tensorrt"),
    "runtime not installed": (["--runtime", "test_absent"], 'Absent is not installed (pip install -e ".[absent]")'),
    "precision onnxruntime lacks": (["--precision", "fp16"], "precision fp16 is not offered by ONNX Runtime"),
    "unknown precision": (["--precision", "fp8"], "precision: must be one of fp32, bf16, fp16"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_search_refuses_a_runtime_it_cannot_use(case: str, fakes, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    args, words = CASES[case]
    _refused(SEARCH + args, tmp_path, words, capsys)


def test_tensorrt_without_a_gpu_or_tensorrt_is_refused(tmp_path: Path, monkeypatch, capsys) -> None:
    problem = get_runtime("tensorrt").missing()
    if problem is None:
        pytest.skip("TensorRT and a CUDA GPU are present: the runtime is usable here")
    monkeypatch.chdir(tmp_path)
    _refused(SEARCH + ["--runtime", "tensorrt"], tmp_path, problem, capsys)
    assert "TensorRT is not installed" in problem or "needs an NVIDIA GPU" in problem


def test_a_study_keeps_its_runtime(fakes, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(SEARCH + ["--runtime", Twin.name, "--baselines", "teacher"]) == 0
    study = optuna.load_study(study_name="s", storage="sqlite:///run/study.db")
    assert study_attr(study, "runtime")["runtime"] == Twin.name and study.user_attrs["runtime"].startswith("Twin ")
    assert study_attr(study, "teacher_reference")["runtime"] == Twin.name
    assert study.trials[0].user_attrs["metrics"]["runtime"].startswith("Twin ")
    assert "Measured on: Twin " in (tmp_path / "run" / "report.html").read_text()
    capsys.readouterr()
    # Resuming on another runtime would put two runtimes' latencies on one front.
    _refused(SEARCH, tmp_path, "was made with other settings (runtime)", capsys)


EXPORT_CASES = {
    "IR format, other extension": (["--format", "openvino", "--out", "x.acz"], "--format openvino writes .xml files"),
    "xml, other format": (["--format", "onnx", "--out", "x.xml"], "--format onnx writes .onnx files"),
}


@pytest.mark.parametrize("case", sorted(EXPORT_CASES))
def test_export_refuses_a_format_its_extension_contradicts(case: str, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    args, words = EXPORT_CASES[case]
    _refused(["export", "--storage", "sqlite:///none.db", "--study-name", "s", "--trial", "0", *args], tmp_path,
             words, capsys)


@pytest.mark.skipif(importlib.util.find_spec("openvino") is not None, reason="OpenVINO is installed here")
def test_openvino_not_installed_is_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    _refused(SEARCH + ["--runtime", "openvino"], tmp_path, 'pip install -e ".[openvino]"', capsys)
