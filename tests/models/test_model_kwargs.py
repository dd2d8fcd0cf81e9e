"""--model-kwargs / model_kwargs: parsed, checked, passed to the builder, recorded on the study;
the hint when a torchvision model was built for another input size; default study names."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch

from autocomp.cli import main
from autocomp.config import SearchConfig, parse_model_kwargs, read_config_file
from autocomp.data import DataBundle
from autocomp.errors import AutocompError
from autocomp.models.zoo import build_model, check_fits
from autocomp.study.records import study_attr

BUILDER = """\
from torch import nn

def build(num_classes=10, width=16, act="ReLU"):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), getattr(nn, act)(), nn.Linear(width, num_classes))
"""


def test_key_value_lists_parse_as_yaml_values() -> None:
    assert parse_model_kwargs("image_size=32, input_size=[224, 224],dropout=0.1,flag=true,name=abc,none=null") == {
        "image_size": 32, "input_size": [224, 224], "dropout": 0.1, "flag": True, "name": "abc", "none": None}
    assert parse_model_kwargs("") == {}


@pytest.mark.parametrize("bad,message", [
    ("image_size", "is not KEY=VALUE"), ("1x=2", "not a keyword argument name"),
    ({"a": {"b": 1}}, "values are numbers"), (5, "must be a mapping"),
])
def test_bad_model_kwargs_are_one_line_errors(bad: object, message: str) -> None:
    with pytest.raises(AutocompError, match=message):
        SearchConfig(model_kwargs=bad)


def test_model_kwargs_reach_the_builder_and_define_the_study(tmp_path: Path) -> None:
    (tmp_path / "net.py").write_text(BUILDER)
    spec = f"{tmp_path / 'net.py'}:build"
    model = build_model(spec, 10, (1, 8, 8), {"width": 24, "act": "Tanh"})
    assert model[1].out_features == 24 and isinstance(model[2], torch.nn.Tanh)
    with pytest.raises(AutocompError, match="unexpected keyword argument 'depth'"):
        build_model(spec, 10, (1, 8, 8), {"depth": 3})
    with pytest.raises(AutocompError, match="num_classes is set from the data"):
        build_model("torchvision:resnet18", 10, (3, 32, 32), {"num_classes": 5})
    with pytest.raises(AutocompError, match="weights is always None"):
        build_model("torchvision:resnet18", 10, (3, 32, 32), {"weights": "DEFAULT"})
    a = SearchConfig(model=spec, model_kwargs="width=24")
    assert a.identity()["model_kwargs"] == {"width": 24} and a.to_dict()["model_kwargs"] == {"width": 24}
    assert SearchConfig(model=spec).identity()["model_kwargs"] is None  # what studies made before it read


def test_run_files_take_a_mapping_or_the_command_line_form(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("model: torchvision:vit_b_16\nmodel_kwargs: {image_size: 32}\n")
    (tmp_path / "b.yaml").write_text("model_kwargs: image_size=32\n")
    (tmp_path / "c.yaml").write_text("model_kwargs: [1, 2]\n")
    assert read_config_file(str(tmp_path / "a.yaml"))["model_kwargs"] == {"image_size": 32}
    assert read_config_file(str(tmp_path / "b.yaml"))["model_kwargs"] == {"image_size": 32}
    with pytest.raises(AutocompError, match="c.yaml: model_kwargs: must be a mapping"):
        read_config_file(str(tmp_path / "c.yaml"))


def test_search_records_model_kwargs_and_refuses_to_resume_with_others(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "net.py").write_text(BUILDER)
    args = ["search", "--model", f"{tmp_path / 'net.py'}:build", "--no-profile", "--teacher-epochs", "1",
            "--n-trials", "1", "--baselines", "teacher", "--run-dir", str(tmp_path / "run"), "--no-progress"]
    assert main(args + ["--model-kwargs", "width=12"]) == 0
    study = optuna.load_study(study_name="net.build-digits", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    assert study_attr(study, "config")["model_kwargs"] == {"width": 12}
    assert study_attr(study, "identity")["model_kwargs"] == {"width": 12}
    capsys.readouterr()
    assert main(args + ["--model-kwargs", "width=20"]) == 2
    assert "other settings (model_kwargs)" in capsys.readouterr().err


def test_a_vit_built_for_another_size_says_which_kwarg_to_pass() -> None:
    from torchvision.models import VisionTransformer

    vit = VisionTransformer(image_size=224, patch_size=16, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32)
    x = torch.zeros(4, 3, 32, 32)
    data = DataBundle(x, torch.zeros(4, dtype=torch.long), x, torch.zeros(4, dtype=torch.long), 10, [0.0], [1.0])
    with pytest.raises(AutocompError, match=r"pass --model-kwargs image_size=32\)$"):
        check_fits(vit, data)


@pytest.mark.parametrize("model,name", [
    ("digits_cnn", "digits_cnn-digits"), ("torchvision:resnet18", "resnet18-digits"),
    ("models/tiny_vit.py:build", "tiny_vit.build-digits"), ("other/net.py:build", "net.build-digits"),
    ("pkg.nets:make", "nets.make-digits"),
])
def test_default_study_names_tell_model_files_apart(model: str, name: str) -> None:
    assert SearchConfig(model=model).name == name
