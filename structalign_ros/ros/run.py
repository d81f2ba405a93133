"""Run a node graph (:mod:`structalign_ros.ros.graph`) in this process, without launch_ros.

Every node gets the parameter file's values (its own ``ros__parameters`` block, or ``/**``) plus the
graph's per-node values, as ``parameter_overrides`` — what ``--params-file`` gives a node started by
launch. Lifecycle nodes are configured and activated here; one executor spins them all in a
background thread, so the caller can watch and stop them.

Threads: the executor thread only runs callbacks, which are cheap (the perception node hands windows to
its own inference worker, the online trainer has its own thread, the simulated robot steps physics in
its own). The executor is rclpy's single-threaded one on purpose: on this 2-core machine rclpy's
``MultiThreadedExecutor`` delivered 562 of 6290 WrenchStamped messages sent at 1.5 kHz, the
single-threaded one 3518 of 3712 (``docs/BENCHMARKS.md``, node section).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter

from structalign_ros.core.config import ROS_OWN_PARAMETERS, StructAlignConfig
from structalign_ros.core.config_io import flatten, load_yaml, read_values, to_dict
from structalign_ros.ros.graph import NodeSpec
from structalign_ros.ros.perception_node import autostart, responsive_threads


class StartError(RuntimeError):
    """A lifecycle node of the graph could not be configured or activated; the message says why."""


def node_parameters(
    config_file: str | Path | None, spec: NodeSpec, overrides: dict[str, Any] | None = None
) -> list[Parameter]:
    """The parameters ``spec`` starts with: the file's values for its name (``use_sim_time``
    included), then ``overrides`` (dotted names: the CLI's ``--set``), then the graph's own."""
    config = load_yaml(config_file, spec.name) if config_file else StructAlignConfig()
    values = flatten(to_dict(config))
    if config_file:
        own = read_values(config_file, spec.name)
        values.update({k: own[k] for k in ROS_OWN_PARAMETERS if k in own})
    values.update(overrides or {})
    values.update(spec.parameters)
    return [Parameter(name, value=value) for name, value in values.items()]


def build(spec: NodeSpec, config_file: str | Path | None, overrides: dict[str, Any] | None = None) -> Node:
    module, cls = spec.factory.split(":")
    factory = getattr(importlib.import_module(module), cls)
    return factory(parameter_overrides=node_parameters(config_file, spec, overrides))


@contextmanager
def running(
    specs: Sequence[NodeSpec],
    config_file: str | Path | None = None,
    extra: Sequence[Node] = (),
    overrides: dict[str, Any] | None = None,
) -> Iterator[dict[str, Any]]:
    """Build, start and spin the nodes of ``specs`` (see :func:`~structalign_ros.ros.graph.graph`);
    yields ``{node name: node}``. Every node gets ``config_file``'s values and then ``overrides``.

    ``extra`` nodes (monitors, test probes) spin on the same executor. On exit the lifecycle nodes are
    shut down (checkpointing), the executor stopped and every node destroyed. rclpy must be
    initialised by the caller.

    Raises:
        StartError: a lifecycle node failed to configure or activate (its reason is in the message).
    """
    responsive_threads()
    nodes: dict[str, Any] = {}
    executor = SingleThreadedExecutor()
    thread = threading.Thread(target=executor.spin, name="structalign-executor", daemon=True)
    try:
        for spec in specs:
            nodes[spec.name] = build(spec, config_file, overrides)
            executor.add_node(nodes[spec.name])
        for node in extra:
            executor.add_node(node)
        thread.start()
        for spec in specs:  # lifecycle nodes first: sources start once their consumers listen
            if spec.lifecycle and not autostart(nodes[spec.name]):
                raise StartError(f"{spec.name}: {nodes[spec.name].last_error}")
        for spec in specs:
            start = getattr(nodes[spec.name], "start", None)
            if not spec.lifecycle and callable(start):
                start()
        yield nodes
    finally:
        for node in nodes.values():
            if hasattr(node, "trigger_shutdown"):
                try:
                    node.trigger_shutdown()
                except Exception as exc:  # already finalized: shutting down regardless
                    node.get_logger().debug(f"shutdown: {exc}")
            elif callable(getattr(node, "stop", None)):
                node.stop()
        executor.shutdown()
        if thread.is_alive():
            thread.join(5.0)
        for node in [*nodes.values(), *extra]:
            node.destroy_node()
