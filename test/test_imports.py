"""No import cycle anywhere in the package, counting imports inside functions.

The graph is read from the source (``ast``), not by importing: a cycle hidden behind a function-level
import only fails at run time, on the path that triggers it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import structalign_ros

ROOT = Path(structalign_ros.__file__).parent
PACKAGE = ROOT.name


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """``{module: modules of this package it imports}``, every ``import`` statement counted."""
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: resolve against this module's package
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    source = ".".join([*base, node.module] if node.module else base)
                else:
                    source = node.module or ""
                # ``from pkg import sub`` imports the submodule when there is one
                targets.update(
                    f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names
                )
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle_and_accepts_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_function_level_imports():
    graph = import_graph()
    assert len(graph) > 50
    # core/online.py imports core.export at module level; commands/eval.py imports it in a function
    assert f"{PACKAGE}.core.export" in graph[f"{PACKAGE}.core.online"]
    assert f"{PACKAGE}.core.export" in graph[f"{PACKAGE}.commands.eval"]


def test_no_import_cycle_in_the_package():
    assert find_cycle(import_graph()) is None
