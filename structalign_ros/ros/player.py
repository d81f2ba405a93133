"""Replay rosbag2 files onto ROS topics in real time (``structalign play``).

For machines without ``ros2 bag play`` (rosbag2_py is not installable from PyPI): messages are read
with ``rosbags`` (:mod:`structalign_ros.core.data.bags`), copied into rclpy messages
(:func:`~structalign_ros.ros.messages.to_rclpy`) and published when their recorded receive time is due,
scaled by ``rate``. With ``clock`` the bag time is also published on ``/clock`` (for nodes running with
``use_sim_time``). Message stamps are published as recorded.

With a fault (:class:`~structalign_ros.core.config.FaultConfig`), the messages of one topic are
published as the faulted sensor would send them (:func:`~structalign_ros.core.sim.faults.fault_message`);
its ``start_s``/``stop_s`` count from that topic's first message of each bag.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

from rclpy.node import Node
from rosgraph_msgs.msg import Clock

from structalign_ros.core.config import FaultConfig
from structalign_ros.core.data.bags import bag_info, iter_messages
from structalign_ros.core.sim.faults import FaultInjector, fault_message
from structalign_ros.ros.messages import rclpy_class, time_msg, to_rclpy


class BagPlayer(Node):
    """Publishes the bags' messages from a background thread; :attr:`done` is set at the end.

    Args:
        bags: played one after the other (each bag's time restarts, like a recording session).
        rate: playback speed factor (2 = twice as fast).
        clock: also publish the bag time on ``/clock``.
        loops: how many times to play the list (bag time keeps restarting each loop).
        wait_s: before playing, wait up to this long for a subscriber to appear (DDS discovery takes a
            moment; messages published before it completes are lost), then 0.5 s more for the rest.
        fault: a sensor fault to inject into the messages of ``fault_topic`` (of kind
            ``fault.modality``); None: play as recorded.
        fault_topic: the topic the fault hits.
        fault_seed: seeds the fault's noise.
    """

    def __init__(
        self,
        bags: Sequence[str | Path],
        rate: float = 1.0,
        clock: bool = False,
        loops: int = 1,
        wait_s: float = 5.0,
        fault: FaultConfig | None = None,
        fault_topic: str = "",
        fault_seed: int = 0,
    ) -> None:
        super().__init__("structalign_player")
        if not rate > 0:
            raise ValueError(f"rate={rate} must be > 0")
        self.bags, self.rate, self.loops, self.wait_s = [Path(b) for b in bags], rate, loops, wait_s
        types: dict[str, str] = {}
        for bag in self.bags:
            types.update({t: msgtype for t, (msgtype, _) in bag_info(bag).topics.items()})
        self._pubs = {t: self.create_publisher(rclpy_class(m), t, 10) for t, m in types.items()}
        self.fault = fault if fault is not None and fault.active else None
        if self.fault is not None and fault_topic not in self._pubs:
            raise ValueError(
                f"fault topic {fault_topic!r} is not in the bags (they have {sorted(self._pubs)})"
            )
        self.fault_topic = fault_topic
        self._fault_seed = fault_seed
        self.faulted = 0  # messages published changed by the fault
        self._clock = self.create_publisher(Clock, "/clock", 10) if clock else None
        self.published = 0
        self.late_ms = 0.0  # the most any message was published behind its due time
        self.done = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._play, name="structalign-player", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def _wait_for_subscribers(self) -> None:
        deadline = time.monotonic() + self.wait_s
        while time.monotonic() < deadline and not self._stop.is_set():
            if any(p.get_subscription_count() for p in self._pubs.values()):
                self._stop.wait(0.5)
                return
            self._stop.wait(0.05)

    def _play(self) -> None:
        self._wait_for_subscribers()
        try:
            for _ in range(self.loops):
                for bag in self.bags:
                    self._play_bag(bag)
                    if self._stop.is_set():
                        return
        finally:
            self.done.set()

    def _play_bag(self, bag: Path) -> None:
        injector = FaultInjector(self.fault, self._fault_seed) if self.fault is not None else None
        start_wall = time.monotonic()
        start_bag: int | None = None
        for topic, receive_ns, msg in iter_messages([bag], self._pubs):
            if self._stop.is_set():
                return
            start_bag = receive_ns if start_bag is None else start_bag
            due = start_wall + (receive_ns - start_bag) * 1e-9 / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                self.late_ms = max(self.late_ms, -delay * 1e3)
            if self._clock is not None:
                self._clock.publish(Clock(clock=time_msg(receive_ns)))
            if injector is not None and topic == self.fault_topic:
                faulted = fault_message(injector.fault.modality, msg, injector)
                self.faulted += faulted is not msg
                msg = faulted
            self._pubs[topic].publish(to_rclpy(msg))
            self.published += 1
