"""The package's layout: stage subpackages whose module-level imports point only down the layer order, with no cycle.

The check walks the source with :mod:`ast` (nothing is imported). A module of layer ``L`` may
import, at module level, only modules of ``L`` or of a layer before it in :data:`LAYERS`; the
graph of module-level imports has no cycle; and a pipeline module is imported inside a function
only in the command-line modules, where importing the stages (torch, MONAI) would cost every
command seconds (their module docstrings say so).
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "pipeline"

#: The stages in the order the data flows; each imports only those before it (and itself).
LAYERS: tuple[str, ...] = (
    "core",
    "tasks",
    "synth",
    "datasets",
    "preprocessing",
    "transforms",
    "networks",
    "inference",
    "visualize",
    "evaluation",
    "training",
    "demo",
    "cli",
)
#: Modules outside the layers: the package's own entry points and the old-name hook.
UNLAYERED: frozenset[str] = frozenset({"pipeline", "pipeline.__main__", "pipeline.legacy_names"})
#: Leaf modules any layer may import: they import nothing of the package.
LEAVES: frozenset[str] = frozenset({"pipeline.legacy_names"})
#: Where a function may import a pipeline module (the stage is imported when its command runs).
DEFERRED_IMPORTS_ALLOWED: tuple[str, ...] = ("pipeline.cli.",)


def module_name(path: Path, package_dir: Path) -> str:
    parts = path.relative_to(package_dir.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(node: ast.Import | ast.ImportFrom, current: str, is_package: bool, modules: set[str]) -> list[str]:
    """The package modules an import statement names (``from a import b``: ``a.b`` when that is a module, else ``a``)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            anchor = current.split(".") if is_package else current.split(".")[:-1]
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, *([base] if base else [])])
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
    root = sorted(modules, key=len)[0]
    return [name for name in names if name == root or name.startswith(root + ".")]


def import_graph(package_dir: Path) -> tuple[dict[str, set[str]], dict[str, list[tuple[int, str]]]]:
    """Module-level imports between the package's modules, and the imports made inside functions (line, module)."""
    paths = {module_name(path, package_dir): path for path in sorted(package_dir.rglob("*.py"))}
    modules = set(paths)
    graph: dict[str, set[str]] = {}
    deferred: dict[str, list[tuple[int, str]]] = {}
    for name, path in paths.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        graph[name] = set()
        top_level = set()
        for node in ast.iter_child_nodes(tree):
            for inner in ast.walk(node) if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) else ():
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    top_level.add(id(inner))
                    graph[name].update(_imported(inner, name, is_package, modules))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top_level:
                for target in _imported(node, name, is_package, modules):
                    deferred.setdefault(name, []).append((node.lineno, target))
    return graph, deferred


def layer_of(module: str) -> int | None:
    """Index of a module's layer in :data:`LAYERS` (``None`` for :data:`UNLAYERED`)."""
    if module in UNLAYERED:
        return None
    return LAYERS.index(module.split(".")[1])


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """``a -> b`` for every module-level import of a later layer's module."""
    found = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            here, there = layer_of(module), layer_of(target)
            if here is not None and target not in LEAVES and (there is None or there > here):
                found.append(f"{module} -> {target}")
    return found


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The cycles of the import graph (one per strongly connected component of two or more modules, or a self-import)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm; the graph has ~100 nodes, so recursion is fine
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def misplaced_deferred_imports(deferred: dict[str, list[tuple[int, str]]]) -> list[str]:
    return [
        f"{module}:{line} imports {target} inside a function"
        for module, found in sorted(deferred.items())
        if not module.startswith(DEFERRED_IMPORTS_ALLOWED)
        for line, target in found
    ]


def test_every_subpackage_and_top_level_module_has_a_layer() -> None:
    graph, _ = import_graph(PACKAGE_DIR)
    for module in graph:
        if module not in UNLAYERED:
            assert module.split(".")[1] in LAYERS, f"{module} belongs to no layer of LAYERS"


def test_module_level_imports_point_only_down_the_layer_order() -> None:
    graph, _ = import_graph(PACKAGE_DIR)
    assert upward_imports(graph) == []


def test_the_leaf_modules_import_nothing_of_the_package() -> None:
    graph, deferred = import_graph(PACKAGE_DIR)
    for leaf in LEAVES:
        assert graph[leaf] == set() and leaf not in deferred


def test_module_level_imports_have_no_cycle() -> None:
    graph, _ = import_graph(PACKAGE_DIR)
    assert import_cycles(graph) == []


def test_pipeline_modules_are_imported_inside_functions_only_by_the_commands() -> None:
    _, deferred = import_graph(PACKAGE_DIR)
    assert misplaced_deferred_imports(deferred) == []


def _write_package(root: Path, files: dict[str, str]) -> Path:
    package = root / "pipeline"
    for relative, text in {"__init__.py": "", **files}.items():
        path = package / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return package


def test_the_checks_find_an_upward_import_a_cycle_and_a_deferred_import(tmp_path: Path) -> None:
    package = _write_package(
        tmp_path,
        {
            "core/__init__.py": "",
            "core/errors.py": "from pipeline.inference.model import load_model\n",  # upward
            "inference/__init__.py": "",
            "inference/model.py": "from pipeline.inference import writers\n",
            "inference/writers.py": "from pipeline.inference.model import load_model\n",  # cycle with model
            "evaluation/__init__.py": "",
            "evaluation/evaluate.py": "def run():\n    from pipeline.inference.model import load_model\n",  # deferred
        },
    )
    graph, deferred = import_graph(package)
    assert upward_imports(graph) == ["pipeline.core.errors -> pipeline.inference.model"]
    assert import_cycles(graph) == [["pipeline.inference.model", "pipeline.inference.writers"]]
    assert misplaced_deferred_imports(deferred) == ["pipeline.evaluation.evaluate:2 imports pipeline.inference.model inside a function"]


@pytest.mark.parametrize("relative", [".", "..core import errors"])
def test_relative_imports_are_resolved(tmp_path: Path, relative: str) -> None:
    statement = "from . import model\n" if relative == "." else "from ..core import errors\n"
    package = _write_package(tmp_path, {"core/__init__.py": "", "core/errors.py": "", "inference/__init__.py": "", "inference/model.py": "", "inference/writers.py": statement})
    graph, _ = import_graph(package)
    expected = "pipeline.inference.model" if relative == "." else "pipeline.core.errors"
    assert expected in graph["pipeline.inference.writers"]
