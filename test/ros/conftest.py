"""Shared fixtures of the ROS 2 tests: real rclpy, real DDS, inside a private network namespace.

- Every test here is marked ``ros``. Outside a network namespace with only loopback (``make test``
  runs pytest through ``tools/netns-run``) they are skipped: DDS traffic must not leave the machine.
- ``ros_domain_id`` gives each test module its own DDS domain, so a process left over by one module
  cannot feed another's subscribers; ``ros_env`` is the environment for child processes in it.
- ``ros_context`` is an initialised rclpy context on that domain (shut down after the module).
- :class:`TopicRecorder` subscribes to topics and keeps what arrives, for assertions.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

_domains = itertools.count(40)  # Fast DDS domain ids must stay below 233; 40+ avoids the default 0


def _only_loopback() -> bool:
    """Whether this process's network namespace has no interface but ``lo``."""
    lines = Path("/proc/net/dev").read_text().splitlines()[2:]
    return {line.split(":")[0].strip() for line in lines} <= {"lo"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    isolated = _only_loopback()
    skip = pytest.mark.skip(reason="starts DDS: run through tools/netns-run (as `make test` does)")
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.ros)
            if not isolated:
                item.add_marker(skip)


@pytest.fixture(scope="module")
def ros_domain_id() -> int:
    return next(_domains)


@pytest.fixture(scope="module")
def ros_env(ros_domain_id: int) -> dict[str, str]:
    """Environment for child processes: this module's domain, no inherited ROS remappings."""
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(ros_domain_id)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


@pytest.fixture(scope="module")
def ros_context(ros_domain_id: int) -> Any:
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context, domain_id=ros_domain_id)
    yield context
    rclpy.try_shutdown(context=context)


@dataclass
class Received:
    """One message as it arrived: its header stamp (ns, 0 without a header), frame, receive times."""

    stamp_ns: int
    frame_id: str
    recv_ros_ns: int
    recv_mono: float
    msg: Any = field(repr=False)


class TopicRecorder:
    """Subscribes to ``topics`` (``{topic: message class}``) and keeps what arrives, from its own thread.

    Subscriptions are reliable with a deep history so a slow test process does not lose messages
    (``qos`` changes that). No executor: the thread takes messages straight from the subscriptions
    every :attr:`POLL_S`; rclpy's executors spend ~0.2 ms of Python per callback, too slow on a
    2-core machine for the simulated robot's ~1.7 kHz of messages.
    """

    POLL_S = 0.001

    def __init__(self, context: Any, topics: dict[str, type], qos: Any = None, name: str = "recorder"):
        from rclpy.node import Node
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        self.node = Node(name, context=context, start_parameter_services=False, enable_rosout=False)
        qos = qos if qos is not None else QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        self.received: dict[str, list[Received]] = {t: [] for t in topics}
        self._lock = threading.Lock()
        self._subs = {
            topic: self.node.create_subscription(cls, topic, lambda msg: None, qos)
            for topic, cls in topics.items()
        }
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        clock = self.node.get_clock()
        while not self._stop.wait(self.POLL_S):
            for topic, sub in self._subs.items():
                while True:
                    with sub.handle:
                        taken = sub.handle.take_message(sub.msg_type, False)
                    if taken is None:
                        break
                    self._store(topic, taken[0], clock.now().nanoseconds)

    def _store(self, topic: str, msg: Any, recv_ros_ns: int) -> None:
        header = getattr(msg, "header", None)
        stamp = header.stamp if header is not None else getattr(msg, "clock", None)
        stamp_ns = stamp.sec * 1_000_000_000 + stamp.nanosec if stamp is not None else 0
        item = Received(stamp_ns, getattr(header, "frame_id", ""), recv_ros_ns, time.monotonic(), msg)
        with self._lock:
            self.received[topic].append(item)

    def snapshot(self) -> dict[str, list[Received]]:
        with self._lock:
            return {t: list(v) for t, v in self.received.items()}

    def wait_for(self, topics: list[str], timeout: float) -> bool:
        """Wait until each of ``topics`` has received at least one message."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if all(self.received[t] for t in topics):
                    return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self.node.destroy_node()


@pytest.fixture(scope="module")
def topic_recorder(ros_context: Any) -> Any:
    """``topic_recorder(topics, **kwargs)`` makes a :class:`TopicRecorder` on this module's context;
    all are closed after the module."""
    made: list[TopicRecorder] = []

    def make(topics: dict[str, type], **kwargs: Any) -> TopicRecorder:
        recorder = TopicRecorder(ros_context, topics, name=f"recorder_{len(made)}", **kwargs)
        made.append(recorder)
        return recorder

    yield make
    for recorder in made:
        recorder.close()
