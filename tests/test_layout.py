"""The tree is the architecture: no import cycle among worker/ and samplers/ (function-level
imports included), internal imports at the top of each module outside the CLI, nothing imports
the CLI, and only worker/settings.py touches the environment."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import REPO

PACKAGES = ("worker", "samplers")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path = REPO) -> dict[str, Path]:
    return {module_name(p, root): p for pkg in PACKAGES for p in sorted((root / pkg).rglob("*.py"))}


def imports_of(path: Path, known: set[str], *, top_level_only: bool = False) -> list[tuple[str, int, bool]]:
    """(internal module, line, at top level) for every import in ``path``; ``from pkg import sub``
    counts as importing ``pkg.sub`` when that is a module, and a module imports its packages."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                       for a in node.names]
        else:
            continue
        for target in targets:
            if target.split(".")[0] not in PACKAGES:
                continue
            parts = target.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
                prefix = ".".join(parts[:i])
                if prefix in known:
                    found.append((prefix, node.lineno, id(node) in top))
    return found


def import_graph(root: Path = REPO) -> dict[str, set[str]]:
    mods = modules(root)
    known = set(mods)
    # A module's own packages are initialised before it by Python itself, not by its imports.
    return {name: {target for target, _, _ in imports_of(path, known) if not _contains(target, name)}
            for name, path in mods.items()}


def _contains(package: str, module: str) -> bool:
    return module == package or module.startswith(package + ".")


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_among_worker_and_samplers():
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_cycle_check_finds_a_cycle_hidden_in_a_function(tmp_path):
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "samplers" / "a.py").write_text("from worker.b import thing\n")
    (tmp_path / "worker" / "b.py").write_text("def thing():\n    from samplers import a\n    return a\n")
    assert cycles(import_graph(tmp_path)) == [["samplers.a", "worker.b"]]


def test_internal_imports_are_at_the_top_outside_the_cli():
    """A function-level import that dodges a cycle is a layering mistake; only the CLI imports
    lazily, to keep ``tracejudge --help`` fast."""
    mods = modules()
    lazy = [f"{path.relative_to(REPO)}:{line}: {target}"
            for name, path in mods.items() if not name.startswith("worker.cli")
            for target, line, at_top in imports_of(path, set(mods)) if not at_top]
    assert not lazy, "function-level imports of our modules:\n" + "\n".join(lazy)


def test_nothing_imports_the_cli():
    mods = modules()
    users = [f"{name} imports {target}" for name, path in mods.items() if not name.startswith("worker.cli")
             for target, _, _ in imports_of(path, set(mods)) if target.startswith("worker.cli")]
    assert not users, users


@pytest.mark.parametrize("name", ["environ", "getenv", "putenv", "unsetenv"])
def test_only_settings_touches_the_environment(name):
    offenders = []
    for mod, path in modules().items():
        if mod == "worker.settings":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr == name and getattr(node.value, "id", None) == "os":
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, f"os.{name} outside worker/settings.py: {offenders}"


def test_modules_stay_small():
    big = {str(p.relative_to(REPO)): n for p in modules().values()
           if (n := len(p.read_text(encoding="utf-8").splitlines())) > 320}
    assert not big, f"modules over ~300 lines: {big}"
