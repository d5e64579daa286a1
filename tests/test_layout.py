"""The tree is the architecture: no import cycle among worker/, samplers/ and benchmarks/
(function-level imports included), none between worker's subpackages (and samplers) either, and
the packages import only from lower layers of a declared order (``LAYERS``); internal imports at the top of each module outside the CLI, nothing imports the CLI, and only
worker/settings.py touches the environment."""
from __future__ import annotations

import ast
import functools
from collections import defaultdict
from pathlib import Path

import pytest

from tests.helpers import REPO

PACKAGES = ("worker", "samplers")
CYCLE_CHECKED = PACKAGES + ("benchmarks",)  # the module-level cycle check covers the benchmarks too


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path = REPO, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    return {module_name(p, root): p for pkg in packages for p in sorted((root / pkg).rglob("*.py"))}


@functools.lru_cache(maxsize=None)
def parsed(path: Path) -> ast.Module:
    """Each module parsed once per run: every check below walks the same trees."""
    return ast.parse(path.read_text(encoding="utf-8"))


def imports_of(path: Path, known: set[str], *, packages: tuple[str, ...] = PACKAGES) -> list[tuple[str, int, bool]]:
    """(internal module, line, at top level) for every import in ``path`` of a module in
    ``packages``; ``from pkg import sub`` counts as importing ``pkg.sub`` when that is a module,
    and a module imports its packages."""
    tree = parsed(path)
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
            if target.split(".")[0] not in packages:
                continue
            parts = target.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
                prefix = ".".join(parts[:i])
                if prefix in known:
                    found.append((prefix, node.lineno, id(node) in top))
    return found


def import_graph(root: Path = REPO, packages: tuple[str, ...] = CYCLE_CHECKED) -> dict[str, set[str]]:
    mods = modules(root, packages)
    known = set(mods)
    # A module's own packages are initialised before it by Python itself, not by its imports.
    return {name: {target for target, _, _ in imports_of(path, known, packages=packages) if not _contains(target, name)}
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


# -- package level: worker's subpackages and samplers -----------------------------------------------
def package_of(module: str, root: Path = REPO) -> str:
    """The unit of the package-level check: a subpackage of worker/ (``worker.judging``), samplers
    as a whole, and worker's own __init__ and top-level modules (``worker.settings``) each alone."""
    parts = module.split(".")
    if parts[0] != "worker":
        return parts[0]
    if len(parts) > 1 and (root / "worker" / parts[1]).is_dir():
        return "worker." + parts[1]
    return module


def package_graph(root: Path = REPO) -> tuple[dict[str, set[str]], dict[tuple[str, str], list[str]]]:
    """The import graph of ``package_of`` units (an edge for every module import that crosses from
    one to another, function-level ones included), and, for each package edge, those module imports
    ("path:line: module imports target", the most specific target of each import statement)."""
    mods = modules(root)
    known = set(mods)
    graph: dict[str, set[str]] = {package_of(name, root): set() for name in mods}
    edges: dict[tuple[str, str], set[tuple[str, int, str]]] = defaultdict(set)
    for name, path in mods.items():
        found = [(target, line) for target, line, _ in imports_of(path, known) if not _contains(target, name)]
        for target, line in found:
            a, b = package_of(name, root), package_of(target, root)
            if a == b:
                continue
            graph[a].add(b)
            # `import worker.judging.finish` also runs worker/judging/__init__: name the module, not its package
            if not any(other != target and _contains(target, other) and at == line for other, at in found):
                edges[a, b].add((str(path.relative_to(root)), line, f"{name} imports {target}"))
    return graph, {k: [f"{p}:{line}: {what}" for p, line, what in sorted(v)] for k, v in edges.items()}


def package_cycles_report(root: Path = REPO) -> tuple[list[list[str]], str]:
    """The package-level cycles and a message listing, for each, the module imports that form it."""
    graph, edges = package_graph(root)
    found = cycles(graph)
    lines = []
    for component in found:
        lines.append("cycle: " + " <-> ".join(component))
        loops = sorted({_rotated(_shortest_loop(graph, a, b, set(component)))
                        for a, b in edges if a in component and b in component}, key=lambda c: (len(c), c))
        lines += ["  loop: " + " -> ".join(loop + (loop[0],)) for loop in loops]
        for (a, b), via in sorted(edges.items()):
            if a in component and b in component:
                lines.append(f"  {a} -> {b}")
                lines += [f"    {v}" for v in via]
    return found, "\n".join(lines)


def _shortest_loop(graph: dict[str, set[str]], a: str, b: str, within: set[str]) -> tuple[str, ...]:
    """The edge a -> b closed by the shortest path b -> ... -> a inside ``within``."""
    paths, queue = {b: (b,)}, [b]
    for v in queue:
        if v == a:
            return (a,) + paths[v][:-1] if a != b else (a,)
        for w in sorted(graph.get(v, ())):
            if w in within and w not in paths:
                paths[w] = paths[v] + (w,)
                queue.append(w)
    raise AssertionError(f"{a} -> {b} is not on a cycle")


def _rotated(loop: tuple[str, ...]) -> tuple[str, ...]:
    i = loop.index(min(loop))
    return loop[i:] + loop[:i]


def test_no_import_cycle_among_worker_samplers_and_benchmarks():
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_no_import_cycle_between_the_packages_of_worker_and_samplers():
    """A cycle between packages is a layering mistake even when no two modules import each other:
    each subpackage of worker/ (and samplers) is a layer, and layers only import downwards."""
    found, message = package_cycles_report()
    assert not found, "package import cycles (module imports that form each):\n" + message


def test_the_package_check_finds_a_cycle_no_module_cycle_shows(tmp_path):
    for pkg in ("worker", "worker/a", "worker/b", "samplers"):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "worker" / "a" / "x.py").write_text("from worker.b.y import f\n")
    (tmp_path / "worker" / "b" / "y.py").write_text("def f():\n    return 1\n")
    (tmp_path / "worker" / "b" / "z.py").write_text("def g():\n    from worker.a import x\n    return x\n")
    (tmp_path / "worker" / "settings.py").write_text("")
    (tmp_path / "samplers" / "s.py").write_text("from worker import settings\nfrom worker.a import x\n")
    assert cycles(import_graph(tmp_path)) == []
    found, message = package_cycles_report(tmp_path)
    assert found == [["worker.a", "worker.b"]]
    assert message.splitlines() == [
        "cycle: worker.a <-> worker.b",
        "  loop: worker.a -> worker.b -> worker.a",
        "  worker.a -> worker.b",
        "    worker/a/x.py:1: worker.a.x imports worker.b.y",
        "  worker.b -> worker.a",
        "    worker/b/z.py:2: worker.b.z imports worker.a.x",
    ]


def test_the_cycle_check_covers_the_benchmarks(tmp_path):
    for pkg in CYCLE_CHECKED:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "benchmarks" / "one.py").write_text("from benchmarks.two import Stack\n")
    (tmp_path / "benchmarks" / "two.py").write_text("def main():\n    from benchmarks import one\n")
    assert cycles(import_graph(tmp_path)) == [["benchmarks.one", "benchmarks.two"]]


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
        for node in ast.walk(parsed(path)):
            if isinstance(node, ast.Attribute) and node.attr == name and getattr(node.value, "id", None) == "os":
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, f"os.{name} outside worker/settings.py: {offenders}"


def test_modules_stay_small():
    big = {str(p.relative_to(REPO)): n for p in modules().values()
           if (n := len(p.read_text(encoding="utf-8").splitlines())) > 320}
    assert not big, f"modules over ~300 lines: {big}"


# The declared order of the packages, lowest first: a package imports only from lower layers.
# A new package (or a top-level worker/ module) takes its place here; an upward import fails.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("worker", "worker.errors", "worker.jobs", "worker.json_types", "worker.process_state", "worker.redis_client"),
    ("worker.retrying", "worker.settings", "worker.templates", "worker.rubrics"),
    ("worker.logs", "worker.alerts"),
    ("worker.judges",),  # the provider clients
    ("worker.rate_limits", "worker.batching", "worker.accounting"),  # around the providers
    ("worker.langfuse_io",),
    ("worker.drift", "worker.runtime"),  # what a score adds up to; the composition root
    ("samplers",),
    ("worker.judging",),  # the steps of one job
    ("worker.authoring",),
    ("worker.review",),
    ("worker.fleet", "worker.report"),  # the processes, the report
    ("worker.cli",),  # nothing imports it
)


def upward_imports(graph: dict[str, set[str]], edges: dict[tuple[str, str], list[str]],
                   layers: tuple[tuple[str, ...], ...] = LAYERS) -> list[str]:
    """Every package import that does not go to a lower layer, with the module imports behind it,
    and every package the order does not declare."""
    layer = {pkg: i for i, names in enumerate(layers) for pkg in names}
    found = [f"{pkg} is not in LAYERS (tests/test_layout.py): give it its place" for pkg in sorted(graph)
             if pkg not in layer]
    for a in sorted(graph):
        for b in sorted(graph[a]):
            if a in layer and b in layer and layer[b] >= layer[a]:
                found.append(f"{a} (layer {layer[a]}) imports {b} (layer {layer[b]}):")
                found += [f"  {line}" for line in edges.get((a, b), [])]
    return found


def test_packages_import_only_from_lower_layers():
    graph, edges = package_graph()
    found = upward_imports(graph, edges)
    assert not found, "the declared package order is broken:\n" + "\n".join(found)


def test_the_order_check_finds_an_upward_import_and_an_undeclared_package():
    graph = {"worker.rubrics": {"worker.judging"}, "worker.judging": {"worker.rubrics"}, "worker.new": set()}
    edges = {("worker.rubrics", "worker.judging"): ["worker/rubrics/x.py:3: worker.rubrics.x imports worker.judging.y"]}
    assert upward_imports(graph, edges) == [
        "worker.new is not in LAYERS (tests/test_layout.py): give it its place",
        "worker.rubrics (layer 1) imports worker.judging (layer 8):",
        "  worker/rubrics/x.py:3: worker.rubrics.x imports worker.judging.y",
    ]
