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
    # core/serve/online.py imports core.serve.export at module level; commands/eval.py in a function
    assert f"{PACKAGE}.core.serve.export" in graph[f"{PACKAGE}.core.serve.online"]
    assert f"{PACKAGE}.core.serve.export" in graph[f"{PACKAGE}.commands.eval"]


def test_no_import_cycle_in_the_package():
    assert find_cycle(import_graph()) is None


# The rooms of the package, by floor: a module may import from its own room or from a lower floor only,
# so the folder list reads as the data path (msg -> window -> batch -> model -> outputs).
FLOORS = {
    PACKAGE: 0,  # the package's own __init__ (its version)
    "core": 0,
    "core.config": 0,  # the schema and its I/O
    "core.ot": 1,
    "core.data": 1,  # convert, windows, bags, dataset, batch
    "core.learn": 2,  # models, kernels, objectives, train
    "core.sim": 2,
    "core.eval": 3,  # evaluation, metrics, quality against baselines
    "core.serve": 3,  # export, runtime, the live pipeline, health, online fine-tuning
    "ros": 4,
    "commands": 5,
    "cli": 6,
}


def room(module: str) -> str:
    parts = module.split(".")[1:]
    if not parts:
        return PACKAGE
    if parts[0] == "core" and len(parts) > 1:
        return "core.config" if parts[1] in ("config", "config_io") else f"core.{parts[1]}"
    return parts[0]


def test_every_import_between_rooms_points_down_a_floor():
    graph = import_graph()
    assert {room(m) for m in graph} == set(FLOORS)
    upward = sorted(
        f"{a} -> {b}"
        for a, targets in graph.items()
        for b in targets
        if room(a) != room(b) and FLOORS[room(a)] <= FLOORS[room(b)]
    )
    assert not upward
