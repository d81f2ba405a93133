"""The node graphs of the suite, in plain Python.

One description serves both ways of starting the suite: ``launch/*.launch.py`` map it onto
``launch_ros`` (a robot with a ROS 2 install), and ``structalign run`` / ``structalign demo`` build the
same nodes in one process (:mod:`structalign_ros.ros.run`, for machines without launch_ros). Both
give every node the same parameter file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from structalign_ros.core.config import StructAlignConfig

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


def perception(config: StructAlignConfig, ground_truth: bool = False) -> NodeSpec:
    """The perception node; with ``ground_truth`` it also learns from and scores against the simulated
    robot's true end-effector pose."""
    params = {"node.ground_truth_topic": config.sim.ee_pose_topic} if ground_truth else {}
    return NodeSpec(
        "perception_node",
        "structalign_perception",
        "structalign_ros.ros.perception_node:PerceptionNode",
        lifecycle=True,
        parameters=params,
    )


def simulator() -> NodeSpec:
    """The simulated robot publishing every sensor topic and the ground truth."""
    return NodeSpec("sim_node", "structalign_sim", "structalign_ros.ros.sim_node:SimNode")


GRAPHS = {
    "perception": lambda config: [perception(config)],
    "sim_demo": lambda config: [simulator(), perception(config, ground_truth=True)],
}


def graph(name: str, config: StructAlignConfig) -> list[NodeSpec]:
    """The nodes of graph ``name`` (one of :data:`GRAPHS`)."""
    if name not in GRAPHS:
        raise ValueError(f"unknown graph {name!r}; graphs are {sorted(GRAPHS)}")
    return GRAPHS[name](config)


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
        for spec in graph(graph_name, StructAlignConfig())
    ]
    argument = DeclareLaunchArgument("config", default_value=default, description="ROS parameter file")
    return LaunchDescription([argument, *nodes])
