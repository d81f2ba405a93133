"""rosbag2 files in and out, through the pure-Python ``rosbags`` library (no ROS install needed).

Writing: :class:`BagWriter` stores standard messages (``sensor_msgs/Image``, ``sensor_msgs/Imu``,
``sensor_msgs/JointState``, ``geometry_msgs/WrenchStamped``, ``geometry_msgs/PoseStamped``) in either
rosbag2 storage, ``mcap`` or ``sqlite3``; the ``*_msg`` builders make those messages from numpy.

Reading: :func:`iter_samples` streams one or several bags in sequence, message by message in time
order (``rosbags`` reads a bag chunk by chunk, so a bag larger than RAM is fine), converts each message
of a configured topic with :mod:`structalign_ros.core.data.convert`, and counts what it had to drop.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer, WriterError
from rosbags.typesys import Stores, get_typestore

from structalign_ros.core.config import ModalityConfig
from structalign_ros.core.data.convert import ConversionError, convert

STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
# rosbag2 metadata version 9 is what Jazzy and Kilted write.
BAG_VERSION = 9


class BagError(RuntimeError):
    """A bag cannot be opened, read or written; the message names the bag and the reason."""


class BagTopicError(BagError):
    """A bag's topics do not fit the configuration (a user's own bag, with other topic names); the
    message names the bag, the topics it has and the ones the configuration reads."""


def topic_mismatch(
    path: str | Path, has: Mapping[str, str], expected: Iterable[str], missing: Iterable[str]
) -> str:
    """The one-paragraph explanation of a :class:`BagTopicError`.

    Args:
        has: the bag's topics and their message types.
        expected: the topics the configuration reads.
        missing: those of ``expected`` the bag lacks.
    """
    held = ", ".join(f"{t} ({m})" for t, m in sorted(has.items())) or "none"
    return (
        f"{path}: the bag lacks the configured topic(s) {', '.join(sorted(missing))}. "
        f"It has: {held}. The configuration reads: {', '.join(sorted(expected))}. "
        "Set modalities.<name>.topic in a parameter file (--config) to the bag's topic names, "
        "or disable the modalities it does not record (modalities.<name>.enabled: false)."
    )


@functools.cache
def typestore() -> Any:
    """The ROS 2 Kilted message definitions (identical to Jazzy for every type used here)."""
    return get_typestore(Stores.ROS2_KILTED)


def _header(stamp_ns: int, frame_id: str) -> Any:
    types = typestore().types
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return types["std_msgs/msg/Header"](types["builtin_interfaces/msg/Time"](sec, nanosec), frame_id)


def _vector3(xyz: Sequence[float]) -> Any:
    return typestore().types["geometry_msgs/msg/Vector3"](*(float(v) for v in xyz))


def image_msg(stamp_ns: int, frame_id: str, pixels: np.ndarray, encoding: str) -> Any:
    """``sensor_msgs/Image`` of ``pixels`` (``(H, W)`` or ``(H, W, C)``), packed rows, little-endian."""
    pixels = np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder("<"))
    height, width = pixels.shape[:2]
    step = pixels.nbytes // height
    data = pixels.reshape(-1).view(np.uint8)
    return typestore().types["sensor_msgs/msg/Image"](
        _header(stamp_ns, frame_id), height, width, encoding, 0, step, data
    )


def wrench_msg(stamp_ns: int, frame_id: str, wrench: np.ndarray) -> Any:
    """``geometry_msgs/WrenchStamped`` of ``wrench`` ``(6,)`` = force xyz, torque xyz."""
    types = typestore().types
    body = types["geometry_msgs/msg/Wrench"](_vector3(wrench[:3]), _vector3(wrench[3:6]))
    return types["geometry_msgs/msg/WrenchStamped"](_header(stamp_ns, frame_id), body)


def imu_msg(stamp_ns: int, frame_id: str, accel: np.ndarray, gyro: np.ndarray, quat_wxyz: np.ndarray) -> Any:
    """``sensor_msgs/Imu``; covariances are unknown (all zero, the ROS convention for "not given")."""
    types = typestore().types
    w, x, y, z = (float(v) for v in quat_wxyz)
    unknown = np.zeros(9, dtype=np.float64)
    return types["sensor_msgs/msg/Imu"](
        _header(stamp_ns, frame_id),
        types["geometry_msgs/msg/Quaternion"](x, y, z, w),
        unknown,
        _vector3(gyro),
        unknown.copy(),
        _vector3(accel),
        unknown.copy(),
    )


def joint_state_msg(stamp_ns: int, names: Sequence[str], state: np.ndarray) -> Any:
    """``sensor_msgs/JointState`` of ``state`` ``(3, J)`` = position, velocity, effort."""
    state = np.asarray(state, dtype=np.float64)
    return typestore().types["sensor_msgs/msg/JointState"](
        _header(stamp_ns, ""), list(names), state[0].copy(), state[1].copy(), state[2].copy()
    )


def pose_msg(stamp_ns: int, frame_id: str, position: np.ndarray, quat_wxyz: np.ndarray) -> Any:
    """``geometry_msgs/PoseStamped``; ``quat_wxyz`` is MuJoCo's quaternion order."""
    types = typestore().types
    w, x, y, z = (float(v) for v in quat_wxyz)
    pose = types["geometry_msgs/msg/Pose"](
        types["geometry_msgs/msg/Point"](*(float(v) for v in position)),
        types["geometry_msgs/msg/Quaternion"](x, y, z, w),
    )
    return types["geometry_msgs/msg/PoseStamped"](_header(stamp_ns, frame_id), pose)


class BagWriter:
    """Write messages to a new rosbag2 directory; topics are registered on first use.

    Use as a context manager; the bag is only complete (metadata.yaml written) after ``close``.
    """

    def __init__(self, path: str | Path, storage: str = "mcap") -> None:
        if storage not in STORAGES:
            raise BagError(f"storage {storage!r} is not one of {sorted(STORAGES)}")
        self.path = Path(path)
        try:
            self._writer = Writer(self.path, version=BAG_VERSION, storage_plugin=STORAGES[storage])
        except WriterError as exc:
            raise BagError(f"{self.path}: {exc}") from None
        self._connections: dict[str, Any] = {}
        self.count = 0
        self.bytes = 0

    def __enter__(self) -> BagWriter:
        try:
            self._writer.open()
        except WriterError as exc:
            raise BagError(f"{self.path}: {exc}") from None
        return self

    def __exit__(self, *exc: object) -> None:
        self._writer.close()

    def write(self, topic: str, msg: Any, stamp_ns: int) -> None:
        """Append ``msg`` on ``topic`` with receive time ``stamp_ns`` (the message's own stamp here)."""
        conn = self._connections.get(topic)
        if conn is None:
            conn = self._writer.add_connection(topic, msg.__msgtype__, typestore=typestore())
            self._connections[topic] = conn
        data = typestore().serialize_cdr(msg, msg.__msgtype__)
        self._writer.write(conn, int(stamp_ns), data)
        self.count += 1
        self.bytes += len(data)


def _open(path: Path) -> Reader:
    try:
        reader = Reader(path)
        reader.open()
    except (ReaderError, OSError) as exc:
        raise BagError(f"{path}: cannot open as rosbag2: {exc}") from None
    return reader


@dataclass(frozen=True)
class BagInfo:
    """A bag's metadata: topic -> (message type, count), and its time span."""

    topics: dict[str, tuple[str, int]]
    start_ns: int
    duration_ns: int


def bag_info(path: str | Path) -> BagInfo:
    """Read one bag's metadata (no messages are read)."""
    reader = _open(Path(path))
    try:
        topics = {c.topic: (c.msgtype, c.msgcount) for c in reader.connections}
        return BagInfo(topics, int(reader.start_time), int(reader.duration))
    finally:
        reader.close()


def iter_messages(
    paths: Iterable[str | Path], topics: Iterable[str], require_any: Iterable[str] = ()
) -> Iterator[tuple[str, int, Any]]:
    """``(topic, receive_ns, message)`` of ``topics`` from each bag in turn, each bag in time order.

    Only the wanted topics are deserialised; a bag with none of them yields nothing. Bags follow each
    other, so time jumps back between two bags; :class:`~.windows.WindowAssembler`
    treats that as a reset.

    Raises:
        BagTopicError: a bag has none of ``require_any`` (when given).
    """
    wanted = set(topics)
    required = set(require_any)
    store = typestore()
    for path in paths:
        reader = _open(Path(path))
        try:
            if required and not required & {c.topic for c in reader.connections}:
                has = {c.topic: c.msgtype for c in reader.connections}
                raise BagTopicError(topic_mismatch(path, has, required, required))
            conns = [c for c in reader.connections if c.topic in wanted]
            if not conns:  # rosbags reads every connection when given none
                continue
            for conn, receive_ns, raw in reader.messages(connections=conns):
                yield conn.topic, receive_ns, store.deserialize_cdr(raw, conn.msgtype)
        except (ReaderError, ValueError, KeyError, IndexError, AssertionError) as exc:
            # rosbags surfaces truncated or corrupt records as one of these, depending on the storage.
            raise BagError(f"{path}: corrupt or unreadable record: {exc!r}") from None
        finally:
            reader.close()


def iter_samples(
    paths: Iterable[str | Path],
    modalities: Mapping[str, ModalityConfig],
    dropped: Counter[str] | None = None,
    pose_topic: str = "",
) -> Iterator[tuple[str, int, np.ndarray]]:
    """``(modality, stamp_ns, array)`` for every enabled modality's topic, converted like the live node.

    Raises:
        BagTopicError: a bag has none of the enabled modalities' topics (nothing in it could be used:
            a bag of other topic names). A bag with some of them is read; the missing streams are
            masked, as a silent sensor is live (``structalign bag-info`` lists them).

    Args:
        paths: bags read one after the other.
        modalities: name -> config; the topic picks the messages, the kind the converter.
        dropped: if given, counts messages that failed conversion, keyed ``"<modality>: <reason>"``;
            they are skipped, as the live node skips them, instead of stopping a long replay.
        pose_topic: if given, ground-truth ``PoseStamped`` messages on it come out as modality
            ``"pose"`` (``(7,)``, see :func:`~.convert.pose_to_array`).
    """
    by_topic = {m.topic: (name, m.kind, m.joint_list) for name, m in modalities.items() if m.enabled}
    if pose_topic:
        by_topic[pose_topic] = ("pose", "pose", [])
    sensors = [m.topic for m in modalities.values() if m.enabled]
    for topic, _, msg in iter_messages(paths, by_topic, require_any=sensors):
        name, kind, joints = by_topic[topic]
        try:
            stamp, array = convert(kind, msg, joints)
        except ConversionError as exc:
            if dropped is not None:
                dropped[f"{name}: {exc}"] += 1
            continue
        yield name, stamp, array
