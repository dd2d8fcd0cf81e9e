"""The layout's one rule, read from the source with ``ast`` (nothing is imported): imports flow
down the phases and no module imports itself back (docs/architecture.md).

    cli -> api -> {study, export, report} -> pipeline -> config
        -> {methods, models, data, artifact, measure, runtimes, plan} -> leaves -> errors

Siblings on the components' floor may import each other, but never in a cycle; report reads
the study only through its records and Pareto geometry. Imports inside functions count too:
deferring an import hides a cycle from Python, not from this test.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "autocomp"
FLOORS = {
    "cli": 7, "api": 6, "export": 5, "report": 5, "study": 4, "pipeline": 3, "config": 2,
    "methods": 1, "models": 1, "data": 1, "artifact": 1, "measure": 1, "runtimes": 1, "plan": 1,
    "_cache": 0, "_user_code": 0, "_device": 0, "model_kwargs": 0, "errors": -1,
}
# What report may read of the study: its stored records and the Pareto geometry (the front and its
# hypervolume), not the objective.
REPORT_READS = {"autocomp.study.records", "autocomp.study.pareto", "autocomp.study.hypervolume"}


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


MODULES = module_names()


def imports_of(name: str, path: Path) -> set[str]:
    """Every autocomp module ``name`` imports, anywhere in its body, resolved to a module."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = name.split(".") if is_package else name.split(".")[:-1]
            if node.level:
                base = base[: len(base) - node.level + 1]
            stem = ".".join(base + [node.module] if node.module else base) if node.level else node.module
            targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in MODULES else stem for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name and target.startswith("autocomp"):
                found.add(target)
    return found


GRAPH = {name: imports_of(name, path) for name, path in MODULES.items()}


def unit(module: str) -> str:
    """The phase a module belongs to: its first name under ``autocomp``."""
    return module.split(".")[1] if "." in module else ""


def test_every_module_has_a_floor() -> None:
    missing = sorted({unit(m) for m in MODULES if m != "autocomp"} - set(FLOORS))
    assert not missing, f"modules outside the layout (add them to FLOORS and docs/architecture.md): {missing}"


def test_imports_flow_down_the_phases() -> None:
    wrong = []
    for source, targets in GRAPH.items():
        if source == "autocomp":  # the public API re-exports from every phase, lazily
            continue
        for target in targets:
            a, b = unit(source), unit(target)
            if a == b or (FLOORS[a] == FLOORS[b] == 1) or FLOORS[b] < FLOORS[a]:
                if a == "report" and b == "study" and target not in REPORT_READS:
                    wrong.append(f"{source} -> {target} (report reads only {sorted(REPORT_READS)})")
                continue
            wrong.append(f"{source} ({a}, floor {FLOORS[a]}) -> {target} ({b}, floor {FLOORS[b]})")
    assert not wrong, "imports against the layout's rule:\n" + "\n".join(sorted(wrong))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycle_between_modules() -> None:
    # A package's __init__ runs whenever a module under it is imported, so its imports count;
    # only the top package's lazy public API is left out.
    graph = {m: {t for t in ts if t != "autocomp"} for m, ts in GRAPH.items() if m != "autocomp"}
    assert cycles(graph) == []


def test_no_import_cycle_between_phases() -> None:
    graph: dict[str, set[str]] = {}
    for source, targets in GRAPH.items():
        if source != "autocomp":
            graph.setdefault(unit(source), set()).update(unit(t) for t in targets if unit(t) != unit(source))
    assert cycles(graph) == []


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ({"a": {"b"}, "b": {"a"}, "c": {"a"}}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}}, [["a", "b", "c"]]),
])
def test_the_cycle_finder_finds_cycles(graph: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert cycles(graph) == expected


def test_resolves_relative_and_deferred_imports(tmp_path: Path) -> None:
    path = tmp_path / "x.py"
    path.write_text("def f():\n    from autocomp.study import runner\n    from ..data import splits\n")
    assert imports_of("autocomp.pipeline.x", path) == {"autocomp.study.runner", "autocomp.data.splits"}


def test_a_package_init_only_re_exports() -> None:
    """Logic lives in named modules; an ``__init__`` imports and lists (the top package's lazy
    ``__getattr__`` aside), so following a call never bounces through a package's front door."""
    holding = []
    for name, path in MODULES.items():
        if path.name != "__init__.py" or name == "autocomp":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        defs = [n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)]
        if defs:
            holding.append(f"{name}: {defs}")
    assert not holding
