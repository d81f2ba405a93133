"""Sensor messages taken straight from their subscriptions by one thread, in stamp order.

rclpy's executors spend a few hundred microseconds of Python per callback (wait set rebuilt, one
message taken per ready subscription per cycle, task bookkeeping). The sensor suite sends about 1.7 k
messages a second; on a 2-core robot computer that saturates the executor thread, and because it takes
one message per topic per cycle, a 1 kHz stream falls behind a 200 Hz one and the windows get masked.

:class:`SensorReader` instead owns the sensor subscriptions (put in a callback group no executor may
run, :class:`PolledGroup`), drains every one of them each millisecond, and hands the messages over in
header-stamp order, so the window assembler sees time in order whatever the topics' arrival pattern.
The node's executor keeps the services, parameters and timers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from rclpy.callback_groups import CallbackGroup

from structalign_ros.ros.messages import stamp_of

POLL_S = 0.001


class PolledGroup(CallbackGroup):
    """A callback group no executor runs: its subscriptions are read by a :class:`SensorReader`."""

    def can_execute(self, entity: Any) -> bool:
        return False

    def beginning_execution(self, entity: Any) -> bool:
        return False

    def ending_execution(self, entity: Any) -> None:
        return None


def _stamp(msg: Any) -> int:
    header = getattr(msg, "header", None)
    return 0 if header is None else stamp_of(header.stamp)


class SensorReader:
    """Drains ``subscriptions`` (``{name: subscription}``) from a thread and calls
    ``handle(name, msg, arrival_ns)`` for every message, each drained batch in header-stamp order.

    ``handle`` must not raise (the node catches and counts everything inside it).
    """

    def __init__(self, subscriptions: dict[str, Any], handle: Callable[[str, Any, int], None]) -> None:
        self.subscriptions = subscriptions
        self.handle = handle
        self.taken = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="structalign-sensors", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5.0)

    def _drain(self) -> list[tuple[int, str, Any, int]]:
        batch = []
        for name, sub in self.subscriptions.items():
            while True:
                with sub.handle:
                    taken = sub.handle.take_message(sub.msg_type, False)
                if taken is None:
                    break
                msg = taken[0]
                batch.append((_stamp(msg), name, msg, time.monotonic_ns()))
        return batch

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self._drain()
            if not batch:
                self._stop.wait(POLL_S)
                continue
            batch.sort(key=lambda item: item[0])
            self.taken += len(batch)
            for _, name, msg, arrival in batch:
                self.handle(name, msg, arrival)
