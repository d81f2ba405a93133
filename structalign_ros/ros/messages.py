"""rosbags messages -> rclpy messages, and stamps.

The core builds every sensor message once, as a ``rosbags`` object (:mod:`structalign_ros.core.data.bags`:
what the recorder writes to bags). A live publisher (the simulated robot, the node benchmark) turns
that object into the rclpy message of the same type with :func:`to_rclpy`: both implementations carry
the same field names, so one recursive copy serves every type and what goes on the wire is exactly
what a recorded bag holds.
"""

from __future__ import annotations

import array
import functools
import importlib
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time

NS = 1_000_000_000
# numpy dtype -> array.array typecode for ROS sequence fields (rclpy stores them as array.array).
_TYPECODES = {
    np.dtype(np.float64): "d",
    np.dtype(np.float32): "f",
    np.dtype(np.int8): "b",
    np.dtype(np.int16): "h",
    np.dtype(np.uint16): "H",
    np.dtype(np.int32): "i",
    np.dtype(np.uint32): "I",
    np.dtype(np.int64): "q",
    np.dtype(np.uint64): "Q",
}


def time_msg(stamp_ns: int) -> Time:
    """``builtin_interfaces/Time`` of integer nanoseconds."""
    sec, nanosec = divmod(int(stamp_ns), NS)
    return Time(sec=sec, nanosec=nanosec)


def stamp_of(time: Any) -> int:
    """Integer nanoseconds of a ``builtin_interfaces/Time`` (either implementation)."""
    return int(time.sec) * NS + int(time.nanosec)


@functools.cache
def rclpy_class(msgtype: str) -> type:
    """The rclpy class of a ROS type name such as ``sensor_msgs/msg/Image``."""
    package, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


def _value(value: Any) -> Any:
    if hasattr(value, "__msgtype__"):
        return to_rclpy(value)
    if isinstance(value, np.ndarray):
        if value.dtype == np.uint8:
            return value.tobytes()
        return array.array(_TYPECODES[value.dtype], value.tobytes())
    if isinstance(value, list):
        return [_value(v) for v in value]
    return value


def to_rclpy(msg: Any) -> Any:
    """The rclpy message equal to the ``rosbags`` message ``msg`` (fields copied recursively)."""
    cls = rclpy_class(msg.__msgtype__)
    return cls(**{name: _value(getattr(msg, name)) for name in msg.__dataclass_fields__})
