"""Hostile input: every mistake that once ended in a traceback (or silently did the wrong thing)
is kept here as a regression test.

Each table case drives the real CLI in-process (``autocomp.cli.main``) from inside a fresh folder
that the ``hostile`` fixture fills with bad files (``_write_files``), and asserts exit code 2, ONE
line on stderr starting ``autocomp: error:`` that holds the case's words, and that nothing was
written: the folder holds exactly what it held before (no run directory, no study, no storage
folder, no output file).

Adding a case is one entry ``"what": ([args...], "words in the error line")`` in
``SEARCH_CASES``, ``EXPORT_CASES`` or ``REPORT_CASES``; ``{tmp}`` in an argument is that folder
(relative paths resolve there too). Files a case needs go in ``_write_files``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from image_kit import make_image_folder

from autocomp.cli import main
from autocomp.config import SearchConfig
from autocomp.plan import Plan
from autocomp.study.create import DIRECTIONS
from autocomp.study.records import SYSTEM_PREFIX

MODELS = """\
import torch
from torch import nn


def raises():
    raise ValueError("boom")


def linear():
    return nn.Linear(10, 10)


def three_logits():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 3))


def not_module():
    return 3


class _Pair(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        y = self.fc(x.flatten(1))
        return y, y


def returns_tuple(num_classes=10):
    return _Pair()


def pool_only(num_classes=10):
    return nn.Sequential(nn.AdaptiveAvgPool2d((2, 5)), nn.Flatten())
"""


def bomb(depth: int = 25, width: int = 9) -> str:
    """A YAML flow list whose last item expands to width**depth leaves if anything copies aliases."""
    items = ["&x0 [1, 2]"] + [f"&x{i} [{', '.join([f'*x{i - 1}'] * width)}]" for i in range(1, depth + 1)]
    return "[" + ", ".join(items) + "]"


class _Evil:
    """Unpickling this runs a shell command: a checkpoint must never be unpickled as code."""

    def __reduce__(self):  # noqa: ANN204
        return (os.system, ("touch pwned",))


def _write_files(tmp: Path) -> None:
    (tmp / "models.py").write_text(MODELS)
    torch.save({"weight": torch.zeros(3)}, tmp / "wrong.pt")
    torch.save({}, tmp / "empty_dict.pt")
    (tmp / "garbage.pt").write_bytes(b"not a checkpoint")
    torch.save(torch.nn.Linear(2, 2), tmp / "pickled_module.pt")
    torch.save(_Evil(), tmp / "evil.pt")
    (tmp / "empty").mkdir()
    # For data-pipeline cases: an ImageFolder with no class folder, and one whose image cannot be decoded.
    (tmp / "empty_images").mkdir()
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (tmp / "bad_images" / split / cls).mkdir(parents=True)
            (tmp / "bad_images" / split / cls / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    _hostile_folders(tmp)
    # Someone's own files where a run would write: a --run-dir autocomp did not make, and an export target.
    (tmp / "mine" / "artifacts").mkdir(parents=True)
    for name in ("report.html", "trials.csv"):
        (tmp / "mine" / name).write_text("the user's own\n")
    (tmp / "exists.acz").write_bytes(b"the user's own file")
    texts = {
        "unknown_key.yaml": "version: 1\nlayerz: []\n",
        "not_yaml.yaml": "version: [1\n",
        "bomb_space.yaml": f"version: 1\nlayers:\n  - type: Conv2d\n    bits: {bomb()}\n",
        "bomb_config.yaml": f"model: {bomb()}\n",
        "hits_nothing.yaml": "version: 1\nlayers:\n  - name: no_such_layer\n    bits: [null, 8]\n",
        "all_fixed.yaml": "version: 1\nlayers:\n  - type: Conv2d\n    bits: 8\n  - type: Linear\n    sparsity: 0.5\n",
        "config_unknown.yaml": "modle: lenet5\n",
        "config_type.yaml": "n_trials: many\n",
        "config_threads.yaml": "threads: 0\n",
    }
    for name, text in texts.items():
        (tmp / name).write_text(text)


def _hostile_folders(tmp: Path) -> None:
    """Image folders as they come in the wild: links that loop, break or reach a folder twice, one
    class, class folders that differ between train/ and val/."""
    def folder(name: str, classes: int = 2) -> Path:
        return make_image_folder(tmp / name, per_class=2, classes=classes, val_per_class=1)

    os.symlink("..", folder("loop") / "train" / "class_0" / "sub")
    os.symlink("me.png", folder("self_link") / "train" / "class_1" / "me.png")
    os.symlink("gone.png", folder("broken_link") / "val" / "class_0" / "x.png")
    twice = folder("twice")
    os.symlink(twice / "train" / "class_0", twice / "train" / "class_1" / "again")
    folder("one_class", classes=1)
    mismatch = folder("mismatch")
    os.rename(mismatch / "train" / "class_1", mismatch / "train" / "cats")


@pytest.fixture
def hostile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    _write_files(tmp_path)
    monkeypatch.chdir(tmp_path)  # relative storage paths and run dirs land here, where they are checked
    return tmp_path


SEARCH = ["search", "--run-dir", "run", "--study-name", "s", "--no-profile", "--teacher-epochs", "1", "--n-trials", "1",
          "--no-progress"]
SEARCH_CASES: dict[str, tuple[list[str], str]] = {
    # models
    "unknown model": (["--model", "resnet9000"], "unknown model 'resnet9000'"),
    "unknown torchvision model": (["--model", "torchvision:notamodel"], "unknown torchvision classifier"),
    "missing model file": (["--model", "{tmp}/nope.py:build"], "model file not found"),
    "missing module": (["--model", "no_such_pkg.mod:build"], "cannot import model 'no_such_pkg.mod'"),
    "missing builder": (["--model", "models.py:absent"], "has no callable 'absent'"),
    "builder raises": (["--model", "models.py:raises"], "ValueError: boom"),
    "builder returns non-module": (["--model", "models.py:not_module"], "returned int, not an nn.Module"),
    "model input mismatch": (["--model", "models.py:linear"], "does not accept inputs of shape"),
    "model output not logits": (["--model", "models.py:three_logits"], "is not (batch, >= 10) logits"),
    "model returns a tuple": (["--model", "models.py:returns_tuple"], "model output tuple is not"),
    "model without parameters": (["--model", "models.py:pool_only"],
                                 "model has no parameters (only AdaptiveAvgPool2d, Flatten)"),
    "model without parameters, empty checkpoint": (
        ["--model", "models.py:pool_only", "--checkpoint", "empty_dict.pt"], "model has no parameters"),
    # checkpoints
    "missing checkpoint": (["--checkpoint", "none.pt"], "checkpoint not found"),
    "corrupt checkpoint": (["--checkpoint", "garbage.pt"], "cannot load checkpoint"),
    "pickled module checkpoint": (["--checkpoint", "pickled_module.pt"], "weights_only=True"),
    "pickled code checkpoint": (["--checkpoint", "evil.pt"], "weights_only=True"),
    "checkpoint does not fit": (["--checkpoint", "wrong.pt"], "does not fit the model"),
    # data
    "unknown dataset": (["--dataset", "imagenet-9000"], "imagenet-9000"),
    "torchvision dataset without dir": (["--dataset", "mnist"], "mnist"),
    "torchvision dataset not there": (["--dataset", "mnist", "--data-dir", "empty"], "cannot read dataset MNIST"),
    "image folder with no class folder": (["--dataset", "empty_images", "--image-size", "16"], "not an image folder"),
    "undecodable image": (["--dataset", "bad_images", "--image-size", "16"], "cannot decode image"),
    "image folder with a directory loop": (["--dataset", "loop", "--image-size", "16"],
                                           "loop/train/class_0/sub is a symlink loop"),
    "image folder with a self-symlink": (["--dataset", "self_link", "--image-size", "16"],
                                         "self_link/train/class_1/me.png is a symlink loop"),
    "image folder with a broken symlink": (["--dataset", "broken_link", "--image-size", "16"],
                                           "broken_link/val/class_0/x.png is a broken symlink (to gone.png)"),
    "image folder with a folder reached twice": (["--dataset", "twice", "--image-size", "16"],
                                                 "twice/train/class_0 is reached twice"),
    "image folder with one class": (["--dataset", "one_class", "--image-size", "16"],
                                    "1 class folder (class_0): a classifier needs at least 2 classes"),
    "image folder with mismatched class folders": (
        ["--dataset", "mismatch", "--image-size", "16"],
        "train/ and val/ have different class folders (only in train/: cats; only in val/: class_1)"),
    "weights on a builtin model": (["--weights", "DEFAULT"], "needs a torchvision:NAME model"),
    "weights with a checkpoint": (["--model", "torchvision:resnet18", "--weights", "DEFAULT", "--checkpoint",
                                   "wrong.pt"], "pass either weights or a checkpoint"),
    # search spaces
    "unknown space": (["--space", "no-such-space"], "neither a file nor a shipped space"),
    "space with unknown key": (["--space", "unknown_key.yaml"], "layerz: unknown key"),
    "space not YAML": (["--space", "not_yaml.yaml"], "invalid YAML"),
    "space alias bomb": (["--space", "bomb_space.yaml"], "bomb_space.yaml"),
    "space hits no layer": (["--space", "hits_nothing.yaml"], "hits a layer of the model (its layers: 0 (Conv2d)"),
    "space with zero dimensions": (["--space", "all_fixed.yaml"], "0 searched dimensions"),
    # run files and flags
    "missing config": (["--config", "none.yaml"], "config file not found"),
    "config unknown key": (["--config", "config_unknown.yaml"], "modle: unknown key"),
    "config wrong type": (["--config", "config_type.yaml"], "n_trials: must be int"),
    "config alias bomb": (["--config", "bomb_config.yaml"], "model: must be str"),
    "config threads 0": (["--config", "config_threads.yaml"], "threads: must be >= 1"),
    "threads 0": (["--threads", "0"], "threads: must be >= 1"),
    "bad sampler": (["--sampler", "bogus"], "sampler: must be one of"),
    "negative trials": (["--n-trials", "-1"], "n_trials: must be >= 0"),
    "bad channels": (["--channels", "2"], "channels: must be 1 or 3"),
    "bad device": (["--device", "tpu"], "device: must be cpu or cuda"),
    "bad study name": (["--study-name", "a/b"], "study_name: use letters"),
    "study name ..": (["--study-name", ".."], "study_name: '..' is not a folder name of its own"),
    "study name .": (["--study-name", "."], "study_name: '.' is not a folder name of its own"),
    # run directories: someone else's files are never replaced
    "run dir holding the user's files": (["--run-dir", "mine"],
                                         "holds report.html, trials.csv, artifacts that autocomp did not write"),
    "run dir is a file": (["--run-dir", "models.py"], "is a file; choose another --run-dir"),
    "bad baseline": (["--baselines", "teacher,int3"], "unknown baseline 'int3'"),
    # storage
    "unreachable storage": (["--storage", "postgresql://u:p@127.0.0.1:9/none"], "cannot reach storage"),
    "storage not a URL": (["--storage", "not-a-url"], "cannot reach storage not-a-url"),
    "storage folder missing": (["--storage", "sqlite:///nonexistent/dir/x.db"],
                               "folder nonexistent/dir does not exist"),
    "storage folder missing, absolute": (["--storage", "sqlite:///{tmp}/nonexistent/x.db"],
                                         "/nonexistent does not exist"),
    "journal folder missing": (["--storage", "journal:nonexistent/x.log"], "folder nonexistent does not exist"),
    "storage is a folder": (["--storage", "sqlite:///empty"], "empty is not a file"),
    "in-memory storage": (["--storage", "sqlite:///"], "an in-memory database keeps nothing"),
    # measuring devices (the device's own refusals: tests/runtimes/test_remote.py)
    "password in the device URL": (["--measure-on", "ssh://pi:secret@board"], "a password in it is refused"),
    "ssh option as the device": (["--measure-on", "ssh://-oProxyCommand=touch {tmp}/pwned"], "device URL 'ssh://-o"),
    "device not ssh": (["--measure-on", "http://board"], "expected ssh://[user@]host[:port]"),
    "device with tensorrt": (["--measure-on", "ssh://board", "--runtime", "tensorrt"], "a device cannot time"),
}


def _argv(args: list[str], tmp: Path) -> list[str]:
    return [a.replace("{tmp}", str(tmp)) for a in args]


def _tree(folder: Path) -> set[str]:
    """Every path under ``folder``, symlinks listed but never followed (a loop would never end)."""
    out = set()
    for top, dirs, files in os.walk(folder):
        out.update(os.path.relpath(os.path.join(top, n), folder) for n in dirs + files)
    return out


def _refused(argv: list[str], tmp: Path, words: str, capsys: pytest.CaptureFixture) -> str:
    before = _tree(tmp)
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, f"exit {code}, stderr {err[-2000:]!r}"
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("autocomp: error: "), err[-2000:]
    assert words.replace("{tmp}", str(tmp)) in lines[0], lines[0]
    assert _tree(tmp) == before, f"wrote {sorted(_tree(tmp) - before)}"
    return lines[0]


@pytest.mark.parametrize("case", sorted(SEARCH_CASES))
def test_search_refuses_in_one_line_and_writes_nothing(case: str, hostile: Path, capsys) -> None:
    args, words = SEARCH_CASES[case]
    _refused(SEARCH + _argv(args, hostile), hostile, words, capsys)
    assert not (hostile / "pwned").exists()


def test_a_space_with_no_dimension_runs_when_allowed_and_warns(hostile: Path, capsys) -> None:
    assert main(SEARCH + ["--space", "all_fixed.yaml", "--baselines", "", "--allow-empty-space"]) == 0
    assert "warning: search space" in capsys.readouterr().out
    study = optuna.load_study(study_name="s", storage="sqlite:///run/study.db")
    assert len(study.trials) == 1 and study.trials[0].params == {}


# -- export and report: a small study made with Optuna directly (no search needed) ----------------------
def _stored_study(tmp: Path) -> None:
    study = optuna.create_study(study_name="h", storage=f"sqlite:///{tmp / 'study.db'}", directions=DIRECTIONS)
    config = SearchConfig(model="python", dataset="python").to_dict()
    study._storage.set_study_system_attr(study._study_id, SYSTEM_PREFIX + "config", config)
    plan = {"plan": Plan().to_dict()}
    study.add_trial(optuna.trial.create_trial(values=[90.0, 1000.0, 1.0], user_attrs=plan))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, user_attrs=plan))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, user_attrs=plan))


EXPORT = {"--storage": "sqlite:///study.db", "--study-name": "h", "--trial": "0", "--out": "out.acz"}
EXPORT_CASES: dict[str, tuple[list[str], str]] = {
    "missing trial": (["--trial", "999"], "has no trial 999 (it has 3)"),
    "pruned trial": (["--trial", "1"], "trial 1 did not finish (pruned)"),
    "failed trial": (["--trial", "2"], "trial 2 did not finish (fail)"),
    "missing study": (["--study-name", "nope"], "no study 'nope' in sqlite:///study.db (studies there: h)"),
    "missing storage file": (["--storage", "sqlite:///none.db"], "no storage at sqlite:///none.db"),
    "missing storage folder": (["--storage", "sqlite:///nonexistent/x.db"], "no storage at"),
    "study made in Python": ([], "was made from Python"),
    "output file exists": (["--out", "exists.acz"], "exists; pass --force"),
}
REPORT = {"--storage": "sqlite:///study.db", "--study-name": "h", "--out": "rep"}
REPORT_CASES: dict[str, tuple[list[str], str]] = {
    "missing storage file": (["--storage", "sqlite:///none.db"], "no storage at sqlite:///none.db"),
    "missing study": (["--study-name", "nope"], "no study 'nope'"),
}


def _merged(command: str, base: dict[str, str], args: list[str], tmp: Path) -> list[str]:
    flags = dict(base)
    flags.update(zip(args[::2], _argv(args[1::2], tmp), strict=True))
    return [command] + [x for kv in flags.items() for x in kv]


@pytest.mark.parametrize("case", sorted(EXPORT_CASES))
def test_export_refuses_in_one_line_and_writes_nothing(case: str, hostile: Path, capsys) -> None:
    _stored_study(hostile)
    args, words = EXPORT_CASES[case]
    _refused(_merged("export", EXPORT, args, hostile), hostile, words, capsys)


@pytest.mark.parametrize("case", sorted(REPORT_CASES))
def test_report_refuses_in_one_line_and_writes_nothing(case: str, hostile: Path, capsys) -> None:
    _stored_study(hostile)
    args, words = REPORT_CASES[case]
    _refused(_merged("report", REPORT, args, hostile), hostile, words, capsys)


# -- cases that need a study first --------------------------------------------------------------------
BUILDER = """\
from torch import nn


def build(num_classes=10):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.{act}(), nn.Linear(16, num_classes))
"""


def test_an_edited_builder_is_refused_by_its_study_and_by_export(hostile: Path, capsys) -> None:
    """ReLU -> Tanh keeps every shape and the checkpoint still loads: only the builder's source
    tells the two teachers apart. Resuming must not mix their trials, nor export rebuild with
    the other one."""
    (hostile / "net.py").write_text(BUILDER.format(act="ReLU"))
    torch.manual_seed(0)
    torch.save(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(),
                                   torch.nn.Linear(16, 10)).state_dict(), hostile / "net.pt")
    argv = SEARCH + ["--model", "net.py:build", "--checkpoint", "net.pt", "--baselines", "teacher"]
    assert main(argv) == 0
    capsys.readouterr()
    storage = "sqlite:///run/study.db"
    before = optuna.load_study(study_name="s", storage=storage)
    (hostile / "net.py").write_text(BUILDER.format(act="Tanh"))
    line = _refused(argv, hostile, "was made with another teacher: the source of net.py:build changed", capsys)
    assert "restore it or use another --study-name" in line
    after = optuna.load_study(study_name="s", storage=storage)
    assert len(after.trials) == len(before.trials) == 1
    assert after.user_attrs["teacher_accuracy"] == before.user_attrs["teacher_accuracy"]
    _refused(["export", "--storage", storage, "--study-name", "s", "--trial", "0", "--out", "t0.acz"], hostile,
             "the source of net.py:build changed since the study was made", capsys)


def test_ctrl_c_records_interrupted_on_the_trial_in_flight(hostile: Path, capsys, monkeypatch) -> None:
    from autocomp.pipeline.workbench import Workbench

    real = Workbench.run

    def run(self, plan, path, deadline=None, on_step=None):  # noqa: ANN001, ANN202
        if Path(path).stem.endswith("1"):
            raise KeyboardInterrupt
        return real(self, plan, path, deadline, on_step)

    monkeypatch.setattr(Workbench, "run", run)
    assert main(SEARCH[:-3] + ["--n-trials", "3", "--no-progress"]) == 130
    assert "interrupted" in capsys.readouterr().err
    trials = optuna.load_study(study_name="s", storage="sqlite:///run/study.db").trials
    # The baselines not reached stay enqueued (WAITING) for the next run; nothing is left RUNNING.
    states = [t.state.name for t in trials]
    assert states[:2] == ["COMPLETE", "FAIL"] and set(states[2:]) == {"WAITING"} and len(states) >= 3
    assert trials[1].user_attrs["fail_reason"] == "interrupted"
    assert (hostile / "run" / "report.html").is_file()


@pytest.mark.e2e
@pytest.mark.parametrize("case", ["pickled code checkpoint", "model without parameters", "storage folder missing",
                                  "config alias bomb"])
def test_the_installed_command_prints_one_line(case: str, hostile: Path) -> None:
    """The same through a real process: no traceback reaches a user's terminal."""
    args, words = SEARCH_CASES[case]
    before = _tree(hostile)
    out = subprocess.run([sys.executable, "-m", "autocomp.cli", *SEARCH, *_argv(args, hostile)], cwd=hostile,
                         capture_output=True, text=True, timeout=300)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and words in lines[0], out.stderr[-2000:]
    assert _tree(hostile) == before and not (hostile / "pwned").exists()


def test_a_resume_with_another_model_is_refused_before_any_teacher_is_trained(hostile: Path, capsys) -> None:
    """The study's identity is checked against the stored record first: the line names the setting,
    not lenet5's input shape, and no lenet5 teacher is trained for a run that cannot happen."""
    assert main(SEARCH + ["--baselines", "teacher"]) == 0
    capsys.readouterr()
    teachers = Path(os.environ["AUTOCOMP_CACHE"]) / "teachers"
    before = sorted(p.name for p in teachers.iterdir())
    _refused(SEARCH + ["--baselines", "teacher", "--model", "lenet5"], hostile,
             "another model: 'digits_cnn', this run 'lenet5'", capsys)
    assert sorted(p.name for p in teachers.iterdir()) == before
