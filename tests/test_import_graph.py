"""The package's import graph has no cycle (`echoasr.model` included): a module that needs a
helper of a module that needs it back takes it from a module below both.

Every ``import`` counts, at module level or inside a function (a deferred import still ties the
two modules together), except those under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import echoasr

PACKAGE_ROOT = Path(echoasr.__file__).parent

def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE_ROOT.rglob("*.py"):
        parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_modules(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``tree`` (module ``module``) imports: ``import a.b`` gives a.b;
    ``from a import b`` gives a.b where that is a module, else a (b is one of its names); relative
    imports are resolved against ``module``."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return (found & known) - {module}


def import_graph() -> dict[str, set[str]]:
    names = module_names()
    return {module: imported_modules(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)), module,
                                     path.name == "__init__.py", set(names))
            for module, path in names.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                connect(target)
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
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_the_checker_finds_cycles_through_deferred_imports_and_skips_type_checking():
    def graph_of(sources: dict[str, str]) -> dict[str, set[str]]:
        return {module: imported_modules(ast.parse(code), module, False, set(sources)) for module, code in sources.items()}

    circle = graph_of({
        "echoasr.a": "from echoasr.b import helper\n",
        "echoasr.b": "def helper():\n    from echoasr.c import thing\n",
        "echoasr.c": "from . import a\n",
    })
    assert cycles(circle) == [["echoasr.a", "echoasr.b", "echoasr.c"]]
    typed = graph_of({
        "echoasr.a": "from echoasr.b import helper\n",
        "echoasr.b": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from echoasr.a import Thing\n",
    })
    assert cycles(typed) == []


def test_no_import_cycle_in_the_package():
    graph = import_graph()
    assert "echoasr.references" in graph["echoasr.evaluation"]  # the graph is read, deferred imports included
    assert "echoasr.model.generation" in graph["echoasr.model.modeling"]
    assert cycles(graph) == []
