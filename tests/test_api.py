import subprocess
import sys

import pytest
import torch

import autocomp


def test_import_is_light() -> None:
    code = "import sys, autocomp; print('torch' in sys.modules, 'optuna' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.e2e  # a whole search (profile, seeds, trials, report); the quick loop's API search is
# tests/test_pipeline.py::test_python_api_searches_over_datasets
def test_search_in_a_few_lines(tmp_path, tiny_data) -> None:
    from tiny_models import tiny_cnn

    torch.manual_seed(0)
    study = autocomp.search(tiny_cnn().eval(), (tiny_data.train_x, tiny_data.train_y),
                            (tiny_data.val_x, tiny_data.val_y), n_trials=4,
                            storage=f"sqlite:///{tmp_path / 's.db'}", study_name="api", run_dir=str(tmp_path))
    assert len(study.trials) == 4
    assert study.trials[0].user_attrs["baseline"] == "teacher"
    teacher_size = study.trials[0].values[1]
    assert study.trials[1].values[1] < teacher_size  # uniform int8 is a smaller file
    assert (tmp_path / "report.html").is_file()
