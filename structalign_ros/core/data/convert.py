"""Sensor messages -> ``(stamp_ns, numpy array)``, validated.

One module serves the live node (rclpy messages) and the bag reader (``rosbags`` messages): both carry
the same field names (``header.stamp.sec``, ``encoding``, ``step``, ``wrench.force.x``...), so every
function here is duck-typed on those names and imports no ROS package.

What each modality kind becomes (the array :class:`~.windows.WindowAssembler`
buffers):

==========  =======================================  ============================================
kind        message                                  array
==========  =======================================  ============================================
image       sensor_msgs/Image (colour or mono8)      ``(H, W, 3)`` uint8, RGB channel order
depth       sensor_msgs/Image (16UC1/mono16 or       ``(H, W)`` float32 metres, 0 = no return
            32FC1)
tactile     sensor_msgs/Image (32FC1, any numeric)   ``(H, W)`` float32, taxel readings
wrench      geometry_msgs/WrenchStamped              ``(6,)`` float32 ``fx fy fz tx ty tz``
imu         sensor_msgs/Imu                          ``(6,)`` float32 ``ax ay az wx wy wz``
joints      sensor_msgs/JointState                   ``(3, J)`` float32 rows position, velocity,
                                                     effort, columns in the configured joint order
pose        geometry_msgs/PoseStamped (ground truth) ``(7,)`` float32 ``x y z qx qy qz qw``
==========  =======================================  ============================================

Anything that would give a wrong array raises :class:`ConversionError` naming the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from structalign_ros.core.config import DEPTH_ENCODINGS

# encoding -> (numpy dtype, channels); the dtype is little-endian and gets swapped for is_bigendian.
ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "mono8": (np.dtype(np.uint8), 1),
    "mono16": (np.dtype("<u2"), 1),
    "16UC1": (np.dtype("<u2"), 1),
    "32FC1": (np.dtype("<f4"), 1),
}
COLOUR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")
# 16-bit depth is millimetres by the ROS convention (REP-118 allows uint16 mm and float32 m).
DEPTH_MM_PER_M = 1000.0


class ConversionError(ValueError):
    """A message cannot be turned into a correct array; the message says why."""


def stamp_ns(header: Any) -> int:
    """Integer nanoseconds of ``header.stamp`` (``builtin_interfaces/Time``)."""
    sec, nsec = int(header.stamp.sec), int(header.stamp.nanosec)
    if not 0 <= nsec < 1_000_000_000:
        raise ConversionError(f"stamp nanosec={nsec} is outside [0, 1e9)")
    if sec < 0:
        raise ConversionError(f"stamp sec={sec} is negative")
    if sec == 0 and nsec == 0:
        # a driver that never filled the header; such a sample cannot be placed in time
        raise ConversionError("stamp is zero (header not set)")
    return sec * 1_000_000_000 + nsec


def image_pixels(msg: Any) -> np.ndarray:
    """Decode a ``sensor_msgs/Image`` into its pixels, honouring ``step`` padding and endianness.

    Returns:
        ``(H, W, C)`` for multi-channel encodings, ``(H, W)`` for single-channel ones, in the
        encoding's native dtype (uint8, uint16 or float32) and channel order. A copy: the message
        buffer is never aliased.
    """
    encoding = str(msg.encoding)
    if encoding not in ENCODINGS:
        raise ConversionError(f"unknown image encoding {encoding!r}; supported: {sorted(ENCODINGS)}")
    dtype, channels = ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ConversionError(f"empty image {height}x{width}")
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ConversionError(f"step={step} is smaller than a row of {width} {encoding} pixels ({row_bytes})")
    raw = np.frombuffer(memoryview(msg.data).cast("B"), dtype=np.uint8)
    if raw.size != step * height:
        raise ConversionError(f"data has {raw.size} bytes, expected step*height = {step}*{height}")
    if msg.is_bigendian:
        dtype = dtype.newbyteorder(">")
    # Drop the row padding first, then reinterpret the packed rows as pixels.
    rows = raw.reshape(height, step)[:, :row_bytes]
    pixels = np.ascontiguousarray(rows).view(dtype).astype(dtype.newbyteorder("="))
    return pixels.reshape(height, width, channels) if channels > 1 else pixels.reshape(height, width)


def _reject_non_finite(array: np.ndarray, what: str) -> None:
    if not np.isfinite(array).all():
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise ConversionError(f"{what} has {bad} NaN/Inf value(s)")


def image_to_rgb(msg: Any) -> tuple[int, np.ndarray]:
    """Camera image -> ``(stamp_ns, (H, W, 3) uint8 RGB)``; alpha is dropped, mono8 is replicated."""
    if msg.encoding not in COLOUR_ENCODINGS:
        raise ConversionError(f"camera image encoding {msg.encoding!r} is not one of {COLOUR_ENCODINGS}")
    stamp = stamp_ns(msg.header)
    pixels = image_pixels(msg)
    if msg.encoding == "mono8":
        return stamp, np.repeat(pixels[:, :, None], 3, axis=2)
    if msg.encoding.startswith("bgr"):
        pixels = pixels[:, :, 2::-1]
    return stamp, np.ascontiguousarray(pixels[:, :, :3])


def image_to_depth(msg: Any) -> tuple[int, np.ndarray]:
    """Depth image -> ``(stamp_ns, (H, W) float32 metres)``.

    REP-118 lets a depth camera mark pixels without a return as 0 (uint16) or NaN/±Inf (float), so
    those are not errors here: they all become 0, the one "no return" value downstream code checks.
    Negative depth is physically impossible and raises.
    """
    if msg.encoding not in DEPTH_ENCODINGS:
        raise ConversionError(f"depth image encoding {msg.encoding!r} is not one of {DEPTH_ENCODINGS}")
    stamp = stamp_ns(msg.header)
    pixels = image_pixels(msg)
    if pixels.dtype == np.uint16:
        return stamp, pixels.astype(np.float32) / np.float32(DEPTH_MM_PER_M)
    depth = np.where(np.isfinite(pixels), pixels, np.float32(0.0)).astype(np.float32)
    if (depth < 0).any():
        raise ConversionError(f"depth image has {int((depth < 0).sum())} negative value(s)")
    return stamp, depth


def image_to_tactile(msg: Any) -> tuple[int, np.ndarray]:
    """Tactile taxel grid published as an image -> ``(stamp_ns, (H, W) float32)``."""
    if msg.encoding not in ("32FC1", "16UC1", "mono16", "mono8"):
        raise ConversionError(f"tactile encoding {msg.encoding!r} is not a single-channel numeric one")
    stamp = stamp_ns(msg.header)
    taxels = image_pixels(msg).astype(np.float32)
    _reject_non_finite(taxels, "tactile image")
    return stamp, taxels


def _vec3(v: Any) -> tuple[float, float, float]:
    return (v.x, v.y, v.z)


def wrench_to_array(msg: Any) -> tuple[int, np.ndarray]:
    """``geometry_msgs/WrenchStamped`` -> ``(stamp_ns, (6,) float32 fx fy fz tx ty tz)``."""
    w = msg.wrench
    out = np.array(_vec3(w.force) + _vec3(w.torque), dtype=np.float32)
    _reject_non_finite(out, "wrench")
    return stamp_ns(msg.header), out


def imu_to_array(msg: Any) -> tuple[int, np.ndarray]:
    """``sensor_msgs/Imu`` -> ``(stamp_ns, (6,) float32 ax ay az wx wy wz)``.

    The accelerometer includes gravity (REP-145), so a resting IMU reads about +9.81 on its up axis.
    Orientation is not used: many IMUs do not estimate it (``orientation_covariance[0] == -1``).
    """
    out = np.array(_vec3(msg.linear_acceleration) + _vec3(msg.angular_velocity), dtype=np.float32)
    _reject_non_finite(out, "imu")
    return stamp_ns(msg.header), out


def joints_to_array(msg: Any, joint_names: Sequence[str]) -> tuple[int, np.ndarray]:
    """``sensor_msgs/JointState`` -> ``(stamp_ns, (3, J) float32)`` in the order of ``joint_names``.

    Rows are position, velocity, effort. Every configured joint must be present and every field must
    have one value per name: an absent effort would otherwise be silently read as zero torque.
    Extra joints in the message (a gripper the model does not use) are ignored.
    """
    if not joint_names:
        raise ConversionError("no joint names configured")
    names = list(msg.name)
    if len(set(names)) != len(names):
        raise ConversionError(f"joint names repeat in the message: {names}")
    rows = []
    for field in ("position", "velocity", "effort"):
        values = np.asarray(getattr(msg, field), dtype=np.float64)
        if values.shape != (len(names),):
            raise ConversionError(f"{field} has {values.size} value(s) for {len(names)} joint name(s)")
        rows.append(values)
    index = {name: i for i, name in enumerate(names)}
    missing = [n for n in joint_names if n not in index]
    if missing:
        raise ConversionError(f"joint(s) {missing} missing from the message (it has {names})")
    order = [index[n] for n in joint_names]
    out = np.stack(rows)[:, order].astype(np.float32)
    _reject_non_finite(out, "joint state")
    return stamp_ns(msg.header), out


def pose_to_array(msg: Any) -> tuple[int, np.ndarray]:
    """``geometry_msgs/PoseStamped`` -> ``(stamp_ns, (7,) float32 x y z qx qy qz qw)``.

    The quaternion must be unit length (within 1e-3): a zero or unnormalised one is not a rotation.
    """
    p, q = msg.pose.position, msg.pose.orientation
    out = np.array([p.x, p.y, p.z, q.x, q.y, q.z, q.w], dtype=np.float64)
    _reject_non_finite(out, "pose")
    norm = float(np.linalg.norm(out[3:]))
    if abs(norm - 1.0) > 1e-3:
        raise ConversionError(f"pose quaternion has norm {norm:.4f}, not 1")
    return stamp_ns(msg.header), out.astype(np.float32)


# kind -> converter; the joints converter also takes the configured joint list.
CONVERTERS: dict[str, Callable[..., tuple[int, np.ndarray]]] = {
    "image": image_to_rgb,
    "depth": image_to_depth,
    "tactile": image_to_tactile,
    "wrench": wrench_to_array,
    "imu": imu_to_array,
    "joints": joints_to_array,
    "pose": pose_to_array,
}


def convert(kind: str, msg: Any, joint_names: Sequence[str] = ()) -> tuple[int, np.ndarray]:
    """Convert ``msg`` of modality ``kind`` (see the module table) to ``(stamp_ns, array)``."""
    if kind not in CONVERTERS:
        raise ConversionError(f"no converter for modality kind {kind!r}")
    if kind == "joints":
        return joints_to_array(msg, joint_names)
    return CONVERTERS[kind](msg)
