"""The configuration tree as ROS 2 parameters, validated by the core's own code.

Every leaf of :class:`~structalign_ros.core.config.StructAlignConfig` is a parameter with its dotted
name (``modalities.rgb.topic``, ``train.lr``) and the description of its dataclass docstring. A node
using this module is created with ``automatically_declare_parameters_from_overrides=True``, so a
parameter file (``config/*.yaml``, ``ros__parameters``) can add modalities beyond the defaults; the
file's values are merged over the defaults and the result goes through ``from_dict``, so a typo or a bad
value fails with the dotted path of the offending entry instead of being ignored.

Live updates: a node names the parameters that are safe to change while it runs; a change to one of
those is validated on the whole tree and handed to the node, any other change is refused with the
reason (:class:`LiveParameters`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter

from structalign_ros.core.config import ROS_OWN_PARAMETERS, ConfigError, StructAlignConfig
from structalign_ros.core.config_io import (
    config_from_values,
    describe,
    flatten,
    from_dict,
    to_dict,
    unflatten,
)


def node_options() -> dict[str, Any]:
    """Keyword arguments every structalign node passes to ``Node``/``LifecycleNode``."""
    return {"automatically_declare_parameters_from_overrides": True}


def declare_config(node: Node, defaults: StructAlignConfig | None = None) -> StructAlignConfig:
    """Declare the whole tree on ``node`` (descriptions included) and return it, validated.

    Values given to the node (parameter file, ``--ros-args -p``, ``parameter_overrides``) win over
    ``defaults``.

    Raises:
        ConfigError: the given values do not make a valid configuration.
    """
    defaults = defaults if defaults is not None else StructAlignConfig()
    given = {n: p.value for n, p in node.get_parameters_by_prefix("").items() if n not in ROS_OWN_PARAMETERS}
    config = config_from_values(given, defaults)
    docs = describe(config)
    for name, value in flatten(to_dict(config)).items():
        descriptor = ParameterDescriptor(description=docs.get(name, ""))
        if node.has_parameter(name):
            descriptor.type = node.get_parameter(name).type_.value  # as the file gave it
            node.set_descriptor(name, descriptor)
        else:
            node.declare_parameter(name, value, descriptor)
    return config


def read_config(node: Node, defaults: StructAlignConfig | None = None) -> StructAlignConfig:
    """The node's current parameter values as a validated config (after :func:`declare_config`)."""
    defaults = defaults if defaults is not None else StructAlignConfig()
    values = {n: p.value for n, p in node.get_parameters_by_prefix("").items() if n not in ROS_OWN_PARAMETERS}
    return config_from_values(values, defaults)


class LiveParameters:
    """Accepts changes to the ``live`` parameters while the node runs and refuses every other one.

    While :attr:`running` is False (a lifecycle node not yet configured) every valid change is
    accepted: it takes effect at the next configure.

    Args:
        node: the node (its parameters already declared by :func:`declare_config`).
        live: dotted names that may change at run time.
        apply: called with the new validated config after an accepted change.
        current: returns the config now in force (the base a change is validated against).
    """

    def __init__(
        self,
        node: Node,
        live: Iterable[str],
        apply: Callable[[StructAlignConfig], None],
        current: Callable[[], StructAlignConfig],
    ) -> None:
        self.live = frozenset(live)
        self._apply, self._current = apply, current
        self.refused = 0
        self.running = False
        self._pending: StructAlignConfig | None = None
        node.add_on_set_parameters_callback(self._check)
        node.add_post_set_parameters_callback(self._commit)

    def _check(self, params: list[Parameter]) -> SetParametersResult:
        fixed = sorted(p.name for p in params if p.name not in self.live and p.name not in ROS_OWN_PARAMETERS)
        if fixed and self.running:
            self.refused += 1
            return SetParametersResult(
                successful=False,
                reason=f"{', '.join(fixed)} cannot change while the node runs (reconfigure it: "
                f"deactivate, cleanup, set, configure); live parameters are {sorted(self.live)}",
            )
        values = flatten(to_dict(self._current()))
        values.update({p.name: p.value for p in params if p.name not in ROS_OWN_PARAMETERS})
        try:
            self._pending = from_dict(unflatten(values))
        except ConfigError as exc:
            self.refused += 1
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _commit(self, params: list[Parameter]) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._apply(pending)
