"""The docs hold: the README fits on a page and keeps CI's command, every relative link lands on a
file (and heading), the architecture page names every package, and the "adding a method" guide
works when followed to the letter."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", ROOT / "experiments" / "README.md", *sorted(DOCS.glob("*.md"))]
FENCE = re.compile(r"^```.*?^```[ \t]*$", re.S | re.M)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
TEST_COMMAND = ".venv/bin/python -m pytest -q --all"


def prose(text: str) -> str:
    """The page without its code blocks (a `# comment` there is not a heading, a link not a link)."""
    return FENCE.sub("", text)


def anchors(path: Path) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces to dashes."""
    out = set()
    for line in prose(path.read_text(encoding="utf-8")).splitlines():
        match = re.match(r"#{1,6}\s+(.*)", line)
        if match:
            words = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower())
            out.add(words.replace(" ", "-"))
    return out


def test_the_readme_fits_on_a_page_and_keeps_the_commands_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 150
    assert 'python3 -m venv .venv && .venv/bin/pip install -e ".[dev]" && .venv/bin/autocomp search' in readme
    assert TEST_COMMAND in readme
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(rf"^{re.escape(TEST_COMMAND)}$", ci, re.M), ".ci/run must run the README's test command"


def test_the_anchor_rule_matches_github_s() -> None:
    page = DOCS / "artifact.md"
    assert "6-what-a-valid-file-is" in anchors(page)
    assert "streamed-224-px-data-bench_datapy" in anchors(ROOT / "experiments" / "README.md")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_lands_on_a_file_and_heading(page: Path) -> None:
    broken = []
    for target in LINK.findall(prose(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            broken.append(f"{target} (no file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest})")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {dest.name})")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


# Files the guides tell a reader to create; every other source path the docs name must exist.
TO_BE_WRITTEN = {"autocomp/methods/clip.py", "tests/methods/test_clip.py", "autocomp/runtimes/_ort_basic.py",
                 "autocomp/methods/NAME.py", "tests/methods/test_NAME.py"}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_source_path_the_docs_name_exists(page: Path) -> None:
    named = set(re.findall(r"`((?:autocomp|tests|experiments)/[\w/]+\.py)`", prose(page.read_text(encoding="utf-8"))))
    assert not sorted(f for f in named - TO_BE_WRITTEN if not (ROOT / f).exists())


def test_the_architecture_page_names_every_package_and_the_rule() -> None:
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    units = {f"{p.name}/" for p in (ROOT / "autocomp").iterdir() if (p / "__init__.py").exists()}
    units |= {p.name for p in (ROOT / "autocomp").glob("*.py") if p.name != "__init__.py"}
    missing = sorted(u for u in units if u not in text)  # "study/", "api.py" ...
    assert not missing, f"docs/architecture.md does not describe: {missing}"
    assert "tests/test_architecture.py" in text and "cli -> api -> {study, export, report} -> pipeline" in text


def guide_block(first_line: str) -> str:
    """The code block of docs/adding-a-method.md that starts with ``first_line``."""
    text = (DOCS / "adding-a-method.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```(\w*)\n(.*?)^```", text, re.S | re.M)
    found = [code for _, code in blocks if code.startswith(first_line)]
    assert len(found) == 1, f"docs/adding-a-method.md has {len(found)} blocks starting {first_line!r}"
    return found[0]


# Run in a child process so the toy method never stays registered for other tests.
FOLLOW_THE_GUIDE = r'''
import importlib.util, sys
ext, space_file, guide_test, tests_dir, acz = sys.argv[1:]
sys.path.insert(0, tests_dir)
import autocomp.methods
autocomp.methods.__path__.append(ext)  # as if clip.py sat in autocomp/methods/, where the guide puts it

import onnx.numpy_helper, optuna, torch
optuna.logging.set_verbosity(optuna.logging.WARNING)
import autocomp
from autocomp.artifact import export, load_model
from autocomp.methods.registry import knobs
from tiny_models import tiny_mlp

names = list(knobs())  # the registry's own discovery imports autocomp.methods.clip
assert names.index("sparsity") < names.index("clip") < names.index("bits"), names
assert knobs()["clip"].method.__module__ == "autocomp.methods.clip"

torch.manual_seed(0)
teacher, x = tiny_mlp().eval(), torch.randn(4, 1, 8, 8)
space = autocomp.load_space(space_file)
trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
plan = space.sample(trial, teacher)
assert set(trial.params) == {"1.clip", "3.clip"}, trial.params
assert autocomp.Plan.from_json(plan.to_json()) == plan
student = autocomp.apply(teacher, plan, x[:1])
for layer in ("1", "3"):
    fraction = trial.params[f"{layer}.clip"]
    assert 0.5 <= fraction <= 1.0 and plan.layer(layer).clip == fraction
    limit = fraction * teacher[int(layer)].weight.abs().max()
    assert torch.equal(student[int(layer)].weight, teacher[int(layer)].weight.clamp(-limit, limit))

plan = autocomp.Plan(layers={"1": autocomp.LayerPlan(clip=0.5)})
try:
    autocomp.LayerPlan(clip=2.0)
    raise AssertionError("LayerPlan(clip=2.0) was accepted")
except autocomp.AutocompError as exc:
    assert "clip must be in (0, 1]" in str(exc)
student = autocomp.apply(teacher, plan, x[:1])
limit = 0.5 * teacher[1].weight.detach().abs().max()
expected = teacher[1].weight.detach().clamp(-limit, limit).numpy()
assert (abs(expected) == limit.item()).sum() > 1
export(student, x[:1], [x.numpy()], acz, "qat")  # what ships: the clipped weights, baked
stored = [onnx.numpy_helper.to_array(i) for i in load_model(acz).graph.initializer]
shipped = [w if w.shape == expected.shape else w.T for w in stored if w.shape in (expected.shape, expected.T.shape)]
assert len(shipped) == 1 and (abs(shipped[0] - expected) < 1e-6).all()

spec = importlib.util.spec_from_file_location("test_clip", guide_test)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
ran = [name for name in dir(module) if name.startswith("test_")]
for name in ran:
    getattr(module, name)()
print("guide followed:", len(ran), "tests of the guide passed")
'''


def test_the_adding_a_method_guide_works_as_written(tmp_path: Path) -> None:
    ext = tmp_path / "methods"
    ext.mkdir()
    (ext / "clip.py").write_text(guide_block("# autocomp/methods/clip.py"), encoding="utf-8")
    (tmp_path / "test_clip.py").write_text(guide_block("# tests/methods/test_clip.py"), encoding="utf-8")
    space = [code for lang, code in re.findall(r"^```(\w*)\n(.*?)^```",
                                               (DOCS / "adding-a-method.md").read_text(encoding="utf-8"), re.S | re.M)
             if lang == "yaml" and "clip:" in code]
    assert len(space) == 1
    (tmp_path / "clip_space.yaml").write_text(space[0], encoding="utf-8")
    (tmp_path / "follow.py").write_text(FOLLOW_THE_GUIDE, encoding="utf-8")
    args = [str(p) for p in (ext, tmp_path / "clip_space.yaml", tmp_path / "test_clip.py", ROOT / "tests",
                             tmp_path / "clip.acz")]
    done = subprocess.run([sys.executable, str(tmp_path / "follow.py"), *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "guide followed: 2 tests of the guide passed" in done.stdout


def test_the_guide_s_method_is_not_left_registered() -> None:
    from autocomp.methods.registry import knobs

    assert "clip" not in knobs()


def runtime_guide_block(first_line: str) -> str:
    text = (DOCS / "adding-a-runtime.md").read_text(encoding="utf-8")
    found = [code for code in re.findall(r"^```python\n(.*?)^```", text, re.S | re.M) if code.startswith(first_line)]
    assert len(found) == 1
    return found[0]


FOLLOW_THE_RUNTIME_GUIDE = r'''
import importlib.util, sys
module_file, tests_dir, acz = sys.argv[1:]
sys.path.insert(0, tests_dir)
import numpy as np, torch
from autocomp.artifact import export, open_session
from autocomp.runtimes import require, runtime_names
from tiny_models import tiny_mlp

spec = importlib.util.spec_from_file_location("autocomp.runtimes._ort_basic", module_file)
spec.loader.exec_module(importlib.util.module_from_spec(spec))  # what the import in __init__ does
assert "ort_basic" in runtime_names() and require("ort_basic").version()

torch.manual_seed(0)
x = torch.randn(8, 1, 8, 8)
export(tiny_mlp().eval(), x[:1], [x.numpy()], acz, "qat")
basic = open_session(acz, runtime="ort_basic")  # the call every measurement goes through
ort = open_session(acz)
assert np.allclose(basic.run(None, {"input": x.numpy()})[0], ort.run(None, {"input": x.numpy()})[0], atol=1e-5)
record = basic.describe()
assert record["runtime"] == "ort_basic" and record["graph_optimization"] == "basic" and record["threads"] == 1
print("runtime guide followed")
'''


def test_the_adding_a_runtime_guide_works_as_written(tmp_path: Path) -> None:
    module = tmp_path / "_ort_basic.py"
    module.write_text(runtime_guide_block("# autocomp/runtimes/_ort_basic.py"), encoding="utf-8")
    assert "_ort_basic" in runtime_guide_block("from autocomp.runtimes import _onnxruntime")
    (tmp_path / "follow.py").write_text(FOLLOW_THE_RUNTIME_GUIDE, encoding="utf-8")
    done = subprocess.run([sys.executable, str(tmp_path / "follow.py"), str(module), str(ROOT / "tests"),
                           str(tmp_path / "t.acz")], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "runtime guide followed" in done.stdout
