"""SearchConfig: defaults, validation, identity (what a resumed study must match), run files."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from autocomp.config import GROUPS, SearchConfig, read_config_file
from autocomp.errors import AutocompError
from autocomp.measure.protocol import MeasureConfig


def test_defaults_name_the_study_and_its_storage() -> None:
    config = SearchConfig(model="models/net.py:build", dataset="data/images")
    assert config.name == "net.build-images"  # the file's stem: two model files get two studies
    assert config.directory == Path("runs/net.build-images")
    assert config.storage_url == "sqlite:///runs/net.build-images/study.db"
    assert SearchConfig(run_dir="x").storage_url == "sqlite:///x/study.db"


@pytest.mark.parametrize("key, value, words", [
    ("threads", 0, "threads: must be >= 1"),
    ("batch", 0, "batch: must be >= 1"),
    ("n_trials", -1, "n_trials: must be >= 0"),
    ("heartbeat", 0, "heartbeat: must be 1 to 3600"),
    ("train_threads", 0, "train_threads: must be 1 or more"),
    ("sampler", "grid", "sampler: must be one of tpe, nsga2, random"),
    ("device", "tpu", "device: must be cpu or cuda[:N]"),
    ("study_name", "a b", "study_name: use letters"),
    ("study_name", "..", "study_name: '..' is not a folder name of its own"),
    ("study_name", ".", "study_name: '.' is not a folder name of its own"),
    ("study_name", "", "study_name: use letters"),
    ("baselines", ("int3",), "unknown baseline 'int3'"),
])
def test_invalid_settings_are_one_line(key: str, value: object, words: str) -> None:
    with pytest.raises(AutocompError) as info:
        SearchConfig(**{key: value})
    assert words in str(info.value) and "\n" not in str(info.value)


def test_identity_holds_what_defines_the_study_and_not_how_it_runs() -> None:
    base = SearchConfig()
    for key, value in (("seed", 1), ("model", "lenet5"), ("threads", 2), ("checkpoint", "t.pt")):
        assert SearchConfig(**{key: value}).identity() != base.identity(), key
    for key, value in (("n_trials", 3), ("sampler", "random"), ("allow_empty_space", True), ("heartbeat", 5),
                       ("keep_artifacts", False), ("timeout", 9.0)):
        assert SearchConfig(**{key: value}).identity() == base.identity(), key


def test_to_dict_round_trips_as_export_reads_it() -> None:
    config = SearchConfig(model="lenet5", baselines=("teacher", "int4"), allow_empty_space=True)
    d = config.to_dict()
    assert set(d) == {f.name for f in fields(SearchConfig)}
    assert SearchConfig(**{k: tuple(v) if k == "baselines" else v for k, v in d.items()}) == config


def test_a_run_file_sets_any_setting(tmp_path: Path) -> None:
    (tmp_path / "space.yaml").write_text("version: 1\n")
    path = tmp_path / "run.yaml"
    path.write_text("model: lenet5\nn-trials: 7\ntimeout: 60\nallow_empty_space: true\nbaselines: teacher, int8\n"
                    "space: space.yaml\n")
    settings = read_config_file(str(path))
    assert settings == {"model": "lenet5", "n_trials": 7, "timeout": 60.0, "allow_empty_space": True,
                        "baselines": ("teacher", "int8"), "space": str(tmp_path / "space.yaml")}
    assert SearchConfig(**settings).allow_empty_space


@pytest.mark.parametrize("text, words", [
    ("modle: lenet5\n", "modle: unknown key (expected one of model,"),
    ("n_trials: many\n", "n_trials: must be int, got str"),
    ("allow_empty_space: yes please\n", "allow_empty_space: must be bool, got str"),
    ("- model\n", "must be a mapping of settings, got list"),
    ("model: [unclosed\n", "invalid YAML at line 2"),
    ("model: !!python/object/apply:os.system ['true']\n", "invalid YAML"),
])
def test_a_bad_run_file_is_one_line(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(AutocompError) as info:
        read_config_file(str(path))
    assert words in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_settings_are_declared_group_by_group_with_help() -> None:
    groups = [f.metadata["group"] for f in fields(SearchConfig)]
    # Contiguous, in GROUPS' order: the dataclass reads as the grouped list --help shows.
    assert list(dict.fromkeys(groups)) == list(GROUPS)
    assert groups == sorted(groups, key=list(GROUPS).index)
    assert all(len(f.metadata["help"]) > 10 for f in fields(SearchConfig))
    assert [f.name for f in fields(SearchConfig)][0] == "model"  # "unknown key (expected one of model, ..."


def test_measure_hands_the_measurement_settings_on_whole() -> None:
    config = SearchConfig(batch=4, threads=2, device="cuda:1", runtime="openvino", precision="bf16")
    m = config.measure
    assert (m.batch, m.threads, m.device, m.runtime, m.precision) == (4, 2, "cuda:1", "openvino", "bf16")
    assert m == MeasureConfig(4, 2, "cuda:1", runtime="openvino", precision="bf16")
    # Every measurement-group setting reaches the MeasureConfig (device is the model group's, and goes too).
    measured = {f.name for f in fields(SearchConfig) if f.metadata["group"] == "measurement"}
    assert measured <= {f.name for f in fields(MeasureConfig)}
