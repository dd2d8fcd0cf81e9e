"""``autocomp spaces list | show | check``: what each rule hits, dimensions, warnings, one-line errors."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from autocomp.cli import main
from autocomp.models.zoo import build_model
from autocomp.study.space import library, load_space

SHIPPED = sorted(library())


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(["spaces", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_list_shows_every_shipped_space_with_its_description(capsys: pytest.CaptureFixture) -> None:
    code, out, _ = run(capsys, "list")
    lines = out.splitlines()
    assert code == 0 and [line.split()[0] for line in lines] == SHIPPED
    for line in lines:
        assert line.split(maxsplit=1)[1] == load_space(line.split()[0]).description


def test_show_prints_the_file_and_refuses_unknown_names(capsys: pytest.CaptureFixture) -> None:
    code, out, _ = run(capsys, "show", "edge")
    assert code == 0 and out == library()["edge"].read_text(encoding="utf-8")
    code, out, err = run(capsys, "show", "egde")
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert "no shipped space 'egde'" in err and "edge" in err


def test_check_shows_layers_per_rule_dimensions_and_notes(capsys: pytest.CaptureFixture) -> None:
    code, out, err = run(capsys, "check", "default", "--model", "lenet5")
    assert code == 0 and err == ""
    assert "lenet5: 4 compute layers" in out
    assert re.search(r"layers\[1\] \(type: Conv2d\) \[rank, channel_ratio, sparsity, bits\]: 2 layers, "
                     r"8 dimensions: conv1, conv2", out)
    assert "layers[2] (type: Linear) [rank, channel_ratio, sparsity, bits]: 2 layers, 7 dimensions: fc1, fc2" in out
    model = build_model("lenet5", 10, (1, 28, 28))
    dims = load_space("default").dimensions(model, frozenset({"fc2"}))
    assert f"search dimensions: {len(dims)} (15 per-layer, 2 global)" in out and len(dims) == 17
    assert "note: layers[0] (type: DepthwiseConv2d) hits no layer of lenet5" in out
    assert "warning" not in out and "constraints: max_accuracy_drop 5" in out


def test_check_warns_about_rules_that_hit_nothing_and_shadowed_rules(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    path = write(tmp_path, """version: 1
layers:
  - name: conv3
    bits: [8]
  - pattern: "fc*"
    sparsity: {low: 0.0, high: 0.9, step: 0.1}
    group: head
  - regex: "fc1"
    bits: [4, 8]
  - type: Conv2d
    bits: [null, 8]
  - type: DepthwiseConv2d
    bits: [8]
""")
    code, out, _ = run(capsys, "check", path, "--model", "lenet5")
    assert code == 0
    assert "warning: layers[0] (name: conv3) hits no layer of lenet5" in out
    assert re.search(r"warning: layers\[2\] \(regex: fc1\) hits no layer .*matches 1, .*layers\[1\] "
                     r"\(pattern: fc\*\)", out)
    assert "layers[1] (pattern: fc*) [sparsity, group head]: 2 layers, 1 dimension: fc1, fc2" in out
    assert "note: layers[4] (type: DepthwiseConv2d)" in out  # lenet5 has none: a note, not a warning
    assert "search dimensions: 3 (3 per-layer, 0 global)" in out


def test_check_reports_layers_no_rule_decides_and_a_space_that_compresses_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write(tmp_path, "version: 1\nlayers:\n  - name: nothing\n    bits: [8]\n")
    code, out, _ = run(capsys, "check", path, "--model", "lenet5")
    assert code == 0 and "no rule (left alone): 4 layers: conv1, conv2, fc1, fc2" in out
    assert "warning: the space sets no knob on any layer of lenet5" in out


@pytest.mark.parametrize("text, where", [
    ("version: 1\nlayers:\n  - type: Conv2d\n    bitz: [8]\n", "layers[0].bitz: unknown key; did you mean bits?"),
    ("version: 1\nlayers:\n  - type: Linear\n    bits: [4, 8]\n    group: fc1\n", "group: 'fc1' is also a layer name"),
    ("version: 1\nconstraints:\n  max_size_bytes: -5\n", "constraints.max_size_bytes: cannot be met"),
    ("version: 1\nlayers:\n  - type: Conv3d\n    bits: [8]\n", "layers[0].type: unknown layer type 'Conv3d'"),
])
def test_check_mistakes_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, text: str,
                                              where: str) -> None:
    path = write(tmp_path, text)
    code, out, err = run(capsys, "check", path, "--model", "lenet5")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"autocomp: error: {path}: ") and where in err, err


def test_check_refuses_a_bad_input_shape_or_model_in_one_line(capsys: pytest.CaptureFixture) -> None:
    for argv, problem in ((["--input-shape", "1,28"], "three integers"),
                          (["--input-shape", "a,b,c"], "C,H,W integers"),
                          (["--input-shape", "1,4,4"], "does not accept inputs of shape (1, 4, 4)"),
                          (["--model", "nope"], "unknown model 'nope'")):
        args = ["--model", "lenet5", *argv] if argv[0] != "--model" else argv
        code, _, err = run(capsys, "check", "default", *args)
        assert code == 2 and err.count("\n") == 1 and problem in err, err


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_space_checks_clean_on_lenet5(name: str, capsys: pytest.CaptureFixture) -> None:
    code, out, _ = run(capsys, "check", name, "--model", "lenet5")
    assert code == 0 and "warning" not in out
    dims = int(re.search(r"search dimensions: (\d+)", out).group(1))
    assert dims == len(load_space(name).dimensions(build_model("lenet5", 10, (1, 28, 28)), frozenset({"fc2"})))


def test_every_shipped_space_checks_clean_on_resnet18(capsys: pytest.CaptureFixture) -> None:
    for name in SHIPPED:
        code, out, _ = run(capsys, "check", name, "--model", "torchvision:resnet18", "--input-shape", "3,32,32")
        assert code == 0 and "warning" not in out and "21 compute layers" in out, out


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["mobilenet_v2", "mobilenet_v3_small", "squeezenet1_1", "efficientnet_b0",
                                  "resnet50", "densenet121", "regnet_x_400mf", "shufflenet_v2_x1_0"])
def test_every_shipped_space_checks_clean_on_torchvision(arch: str, capsys: pytest.CaptureFixture) -> None:
    for name in SHIPPED:
        code, out, _ = run(capsys, "check", name, "--model", f"torchvision:{arch}")
        assert code == 0 and "warning" not in out, (name, out)
        assert int(re.search(r"search dimensions: (\d+)", out).group(1)) > 0


@pytest.mark.e2e  # the installed command in a child process (4 s): with the e2e tests
def test_the_installed_command_prints_one_line_for_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    raw = b"version: 1\nlayers:\n  - type: Conv2d\n    bits: [8, \xff]\n"
    path.write_bytes(raw)
    bad_byte = raw.index(0xFF)
    done = subprocess.run([sys.executable, "-m", "autocomp.cli", "spaces", "check", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"autocomp: error: {path}: not UTF-8 text (byte {bad_byte})\n"


def study_with(tmp_path: Path, profile: dict | None, name: str = "s") -> str:
    """A SQLite study (no trials), with ``profile`` stored as its per-layer profile; returns the URL."""
    import optuna

    from autocomp.study import records

    url = f"sqlite:///{tmp_path / 'study.db'}"
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line in the captured output
    try:
        study = optuna.create_study(storage=url, study_name=name, directions=["maximize", "minimize", "minimize"])
    finally:
        optuna.logging.set_verbosity(verbosity)
    if profile is not None:
        records.write_profile(study, profile)
    return url


PROFILE = {"version": 1, "samples": 128, "seconds": 4.5, "num_classes": 10, "teacher_bytes": 1000,
           "entries": [{"layer": "conv1", "knob": "bits", "param": "conv1.bits", "value": v, "kl": 0.0,
                        "agreement": 100.0, "bytes": 10, "latency": [1.0, 0.9, 1.1]} for v in (4, 8)]
           + [{"layer": "fc2", "knob": "sparsity", "param": "fc2.sparsity", "value": 0.9, "kl": 3.0,
               "agreement": 9.0, "bytes": -100, "latency": None}],
           "failed": [{"layer": "fc1", "knob": "rank", "value": 0.25, "why": "RuntimeError: no kernel"}],
           "dropped": [{"param": "conv1.bits", "value": 8, "why": "not smaller (+10 bytes) and not faster"},
                       {"param": "fc2.sparsity", "value": 0.9, "why": "alone it keeps the teacher's top-1 on 9%"}]}


def test_check_with_a_study_prints_what_its_profile_dropped_and_why(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    url = study_with(tmp_path, PROFILE)
    code, out, err = run(capsys, "check", "--storage", url, "--study-name", "s")
    assert code == 0 and err == ""
    assert out.splitlines() == [
        "study s: per-layer profile of 3 values on 2 layers (4.5 s, 128 samples)",
        "dropped 2 values from the space:",
        "  conv1.bits = 8: not smaller (+10 bytes) and not faster",
        "  fc2.sparsity = 0.9: alone it keeps the teacher's top-1 on 9%",
        "could not measure 1 value (kept in the space, never seeded):",
        "  fc1.rank = 0.25: RuntimeError: no kernel"]
    code, out, _ = run(capsys, "check", "default", "--model", "lenet5", "--storage", url, "--study-name", "s")
    assert code == 0 and "search dimensions: 17" in out and out.rstrip().endswith("RuntimeError: no kernel")


def test_check_with_a_study_without_profile_says_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    url = study_with(tmp_path, None)
    code, out, _ = run(capsys, "check", "--storage", url, "--study-name", "s")
    assert code == 0 and out == ("study s: no per-layer profile (searched with --no-profile, or made before the "
                                 "profile was measured): it dropped nothing\n")
    (tmp_path / "b").mkdir()
    url = study_with(tmp_path / "b", {**PROFILE, "dropped": [], "failed": []})
    code, out, _ = run(capsys, "check", "--storage", url, "--study-name", "s")
    assert code == 0 and out.splitlines()[1:] == ["dropped 0 values from the space"]


def test_check_refuses_half_a_study_or_nothing_to_check_in_one_line(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    url = study_with(tmp_path, PROFILE)
    for argv, problem in ((["--storage", url], "--storage and --study-name together"),
                          (["--study-name", "s"], "--storage and --study-name together"),
                          ([], "give a space FILE"),
                          (["default", "--model", "lenet5", "--storage", url, "--study-name", "t"], "no study 't'")):
        code, out, err = run(capsys, "check", *argv)
        assert code == 2 and out == "" and err.count("\n") == 1 and problem in err, err
