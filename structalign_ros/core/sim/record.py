"""Record simulated episodes as rosbag2 with standard message types.

Topics and rates come from the configuration's enabled modalities; frame ids follow REP-103/105
(``base_link`` for ground truth, ``*_optical_frame`` for the camera, whose depth is aligned to the
colour image and therefore shares its frame).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from structalign_ros.core.config import StructAlignConfig
from structalign_ros.core.data.bags import (
    BagWriter,
    image_msg,
    imu_msg,
    joint_state_msg,
    pose_msg,
    wrench_msg,
)
from structalign_ros.core.data.convert import DEPTH_MM_PER_M
from structalign_ros.core.sim.faults import FaultInjector
from structalign_ros.core.sim.robot import Reading, SimRobot
from structalign_ros.core.sim.scene import ARMS

FRAMES = {
    "image": "camera_color_optical_frame",
    "depth": "camera_color_optical_frame",
    "wrench": "ft_sensor_link",
    "imu": "imu_link",
    "tactile": "tactile_pad_link",
    "ee_pose": "base_link",
    "object_pose": "base_link",
}


@dataclass(frozen=True)
class EpisodeStats:
    """What :func:`record_episode` wrote."""

    messages: int
    payload_bytes: int
    sim_seconds: float
    wall_seconds: float


def _depth_pixels(metres: np.ndarray, encoding: str) -> np.ndarray:
    if encoding == "32FC1":
        return metres.astype(np.float32)
    # 16UC1 millimetres; 0 stays "no return", ranges past 65.535 m cannot occur indoors but clip anyway.
    return np.clip(np.round(metres * DEPTH_MM_PER_M), 0, 65535).astype(np.uint16)


def reading_to_msg(reading: Reading, config: StructAlignConfig) -> Any:
    """The ``rosbags`` message of one :class:`Reading` (see its docstring for the value layouts)."""
    kind, stamp, v = reading.kind, reading.stamp_ns, reading.value
    frame = FRAMES.get(kind, "")
    if kind == "image":
        return image_msg(stamp, frame, v, "rgb8")
    if kind == "depth":
        encoding = config.sim.depth_encoding
        return image_msg(stamp, frame, _depth_pixels(v, encoding), encoding)
    if kind == "tactile":
        return image_msg(stamp, frame, v.astype(np.float32), "32FC1")
    if kind == "wrench":
        return wrench_msg(stamp, frame, v)
    if kind == "imu":
        return imu_msg(stamp, frame, v[:3], v[3:6], v[6:10])
    if kind == "joints":
        return joint_state_msg(stamp, ARMS[config.sim.robot].joints, v)
    if kind in ("ee_pose", "object_pose"):
        return pose_msg(stamp, frame, v[:3], v[3:7])
    raise ValueError(f"no message type for reading kind {kind!r}")


def topics_by_kind(config: StructAlignConfig) -> dict[str, str]:
    """Reading kind -> topic: the first enabled modality of each kind, and the ground-truth topics."""
    topics: dict[str, str] = {}
    for m in config.modalities.values():
        if m.enabled:
            topics.setdefault(m.kind, m.topic)
    if config.ground_truth_topic:  # empty: the end-effector ground truth is not published
        topics["ee_pose"] = config.ground_truth_topic
    topics["object_pose"] = config.sim.object_pose_topic
    return topics


def record_episode(
    path: str | Path,
    config: StructAlignConfig,
    seed: int,
    seconds: float,
    storage: str = "mcap",
    render: bool = True,
    progress: Callable[[float], None] | None = None,
) -> EpisodeStats:
    """Simulate ``seconds`` of episode ``seed`` and write it to a new bag at ``path``.

    ``config.sim.fault`` (if any) is injected into the recorded sensor readings, ``config.sim.shift``
    applied to the workcell; the ground truth stays clean. ``progress`` is called with the simulated
    seconds done, once per simulated second.
    """
    topics = topics_by_kind(config)
    robot = SimRobot(config, seed, render=render)
    faults = FaultInjector(config.sim.fault, seed) if config.sim.fault.active else None
    start = time.perf_counter()
    next_report = 1_000_000_000
    try:
        with BagWriter(path, storage) as writer:
            for reading in robot.run(seconds):
                if faults is not None:
                    reading = dataclasses.replace(
                        reading, value=faults.apply(reading.kind, reading.stamp_ns, reading.value)
                    )
                writer.write(topics[reading.kind], reading_to_msg(reading, config), reading.stamp_ns)
                if progress is not None and reading.stamp_ns >= next_report:
                    progress(next_report / 1e9)
                    next_report += 1_000_000_000
    finally:
        robot.close()
    return EpisodeStats(writer.count, writer.bytes, seconds, time.perf_counter() - start)
