"""The node graphs of the suite, in plain Python.

One description serves both ways of starting the suite: ``launch/*.launch.py`` map it onto
``launch_ros`` (a robot with a ROS 2 install), and ``structalign run`` / ``structalign demo`` build the
same nodes in one process (:mod:`structalign_ros.ros.run`, for machines without launch_ros). Both
give every node the same parameter file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PACKAGE = "structalign_ros"


@dataclass(frozen=True)
class NodeSpec:
    """One node of a graph.

    Attributes:
        executable: console script in ``lib/structalign_ros`` (``ros2 run structalign_ros <it>``).
        name: the node's name.
        factory: ``module:Class`` building it in-process (``Class(parameter_overrides=...)``).
        lifecycle: a lifecycle node, configured and activated by whoever starts it.
        parameters: values on top of the parameter file (dotted names).
        remappings: ``(from, to)`` topic remappings.
    """

    executable: str
    name: str
    factory: str
    lifecycle: bool = False
    parameters: dict[str, Any] = field(default_factory=dict)
    remappings: tuple[tuple[str, str], ...] = ()


def perception() -> NodeSpec:
    """The perception node (it learns from and scores against ``ground_truth_topic`` when that is set,
    as the simulator publishes it)."""
    return NodeSpec(
        "perception_node",
        "structalign_perception",
        "structalign_ros.ros.perception_node:PerceptionNode",
        lifecycle=True,
    )


def simulator() -> NodeSpec:
    """The simulated robot publishing every sensor topic and the ground truth."""
    return NodeSpec("sim_node", "structalign_sim", "structalign_ros.ros.sim_node:SimNode")


GRAPHS = {
    "perception": (perception,),
    "sim_demo": (simulator, perception),
}


def graph(name: str) -> list[NodeSpec]:
    """The nodes of graph ``name`` (one of :data:`GRAPHS`)."""
    if name not in GRAPHS:
        raise ValueError(f"unknown graph {name!r}; graphs are {sorted(GRAPHS)}")
    return [node() for node in GRAPHS[name]]


def launch_description(graph_name: str):  # -> launch.LaunchDescription (launch is not importable here)
    """Graph ``graph_name`` as a ``launch`` description, for ``launch/*.launch.py``.

    Every node gets the parameter file named by the launch argument ``config`` (default: the
    package's ``config/structalign.yaml``) and then the graph's own values. The perception node
    configures and activates itself (see :func:`~structalign_ros.ros.perception_node.main`).
    """
    from launch.actions import DeclareLaunchArgument
    from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
    from launch_ros.actions import Node
    from launch_ros.substitutions import FindPackageShare

    from launch import LaunchDescription

    default = PathJoinSubstitution([FindPackageShare(PACKAGE), "config", "structalign.yaml"])
    config_file = LaunchConfiguration("config")
    nodes = [
        Node(
            package=PACKAGE,
            executable=spec.executable,
            name=spec.name,
            parameters=[config_file, spec.parameters],
            remappings=list(spec.remappings),
            output="screen",
        )
        for spec in graph(graph_name)
    ]
    argument = DeclareLaunchArgument("config", default_value=default, description="ROS parameter file")
    return LaunchDescription([argument, *nodes])
