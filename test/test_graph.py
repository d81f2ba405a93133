"""The node graphs: what launch files and ``structalign run`` start is installed and consistent.

launch_ros cannot be installed here, so the launch files are checked as far as possible without it:
they compile, use the graph module and name existing graphs; every executable a graph names is a
console script of the package and every factory resolves.
"""

import ast
import importlib
from pathlib import Path

import pytest

from structalign_ros.ros.graph import GRAPHS, graph

ROOT = Path(__file__).resolve().parents[1]


def console_scripts() -> set[str]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    scripts = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and " = " in node.value:
            scripts.add(node.value.split(" = ")[0])
    return scripts


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_graph_nodes_are_installed_executables_with_resolvable_factories(name):
    specs = graph(name)
    assert specs and len({s.name for s in specs}) == len(specs)
    for spec in specs:
        assert spec.executable in console_scripts()
        module, cls = spec.factory.split(":")
        assert hasattr(importlib.import_module(module), cls)


def test_the_sim_demo_nodes_read_one_ground_truth_topic_from_the_tree():
    # the simulator publishes on ground_truth_topic and the node reads it: nothing to copy across
    (perception,) = [s for s in graph("sim_demo") if s.lifecycle]
    assert perception.parameters == {}
    with pytest.raises(ValueError, match="unknown graph"):
        graph("nope")


@pytest.mark.parametrize("path", sorted((ROOT / "launch").glob("*.launch.py")))
def test_launch_files_map_a_known_graph(path):
    tree = ast.parse(path.read_text())
    calls = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "launch_description"
    ]
    assert len(calls) == 1 and calls[0].args[0].value in GRAPHS
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)
