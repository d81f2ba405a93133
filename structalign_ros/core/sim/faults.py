"""Sensor faults injected into a stream of readings: what a degraded sensor would report.

One :class:`FaultInjector` applies one :class:`~structalign_ros.core.config.FaultConfig` (a sensor
kind, a fault kind, a magnitude, a start/stop time) to every reading that passes through it, in stamp
order; readings of other kinds pass unchanged. Pure numpy, no ROS: the simulator node calls it on
each reading before publishing, ``structalign play`` on each message of the faulted topic
(:func:`fault_message`), ``structalign sim`` while recording.

The faults (``kind``), on a value of the layout the simulator and :mod:`~core.data.convert`
use (``image`` ``(H, W, 3)`` uint8, ``depth`` ``(H, W)`` metres, ``wrench`` ``(6,)``, ``imu`` ``(6,)``
or ``(10,)`` with the orientation last, ``tactile`` ``(rows, cols)``, ``joints`` ``(3, J)``):

- ``noise``: plus Gaussian noise of ``magnitude`` x the signal's own std;
- ``stuck``: the last clean value before the fault started, frozen;
- ``bias``: plus ``magnitude`` x the signal's own std, constant;
- ``zero``: all zeros;
- ``blackout`` (image, depth): the whole frame 0 (black; depth: no return);
- ``occlude`` (image, depth): the right half of the frame 0;
- ``delay``: the clean value of ``delay_ms`` earlier (stamps unchanged: the stream is shifted in
  time against the others); until that much history exists, the oldest value.

The signal's own std: for a series, per element (each axis of the F/T and IMU, each joint's
position, velocity and effort, each taxel) over every clean reading seen so far (with fewer than
:data:`MIN_STATS` readings, the std of the current value's elements); for a frame, the std of its
pixels (the scene hardly changes between frames, so this is what a pooled estimate would give).
An IMU's orientation quaternion (elements 6-9) is never faulted: the message stays a valid rotation.

Time: ``start_s``/``stop_s`` count from the first reading the injector sees. A stamp that goes back
(a bag played again) restarts that clock and clears the history. Noise is drawn from a generator
seeded by ``seed`` and restarted on every :meth:`FaultInjector.set`, so a run is deterministic per
seed.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

import numpy as np

from structalign_ros.core.config import (
    FAULT_KINDS,
    FRAME_KINDS,
    MAX_FAULT_DELAY_MS,
    MODALITY_KINDS,
    FaultConfig,
)
from structalign_ros.core.data.bags import image_msg, imu_msg, joint_state_msg, wrench_msg
from structalign_ros.core.data.convert import DEPTH_MM_PER_M, convert

MIN_STATS = 10  # readings before the running std replaces the per-value fallback
IMU_SIGNAL = 6  # accelerometer and gyro; the orientation after them is left alone


class _RunningStd:
    """Welford mean and variance per element of a series; a frame's own pixel std."""

    def __init__(self, frame: bool) -> None:
        self.frame = frame
        self.n = 0
        self.mean: Any = 0.0
        self.m2: Any = 0.0

    def add(self, x: np.ndarray) -> None:
        if self.frame:
            return
        x = x.astype(np.float64)
        self.n += 1
        delta = x - self.mean
        self.mean = self.mean + delta / self.n
        self.m2 = self.m2 + delta * (x - self.mean)

    def std(self, current: np.ndarray) -> np.ndarray | float:
        if self.frame or self.n < MIN_STATS:
            return float(current.std(dtype=np.float64))
        return np.sqrt(self.m2 / (self.n - 1))


class FaultInjector:
    """Applies a fault to the readings of one sensor kind (see the module docstring).

    Thread-safe: :meth:`set` may be called from a parameter callback while another thread calls
    :meth:`apply`.

    Args:
        fault: the fault in force (``FaultConfig()`` for none).
        seed: seeds the noise; the same readings, faults and seed give the same output.
    """

    def __init__(self, fault: FaultConfig | None = None, seed: int = 0) -> None:
        self.seed = seed
        self._lock = threading.Lock()
        self._t0: int | None = None
        self._last: dict[str, int] = {}
        self._stats: dict[str, _RunningStd] = {}
        self._history: dict[str, deque[tuple[int, np.ndarray]]] = {}
        self.set(fault or FaultConfig())

    @property
    def fault(self) -> FaultConfig:
        """The fault in force."""
        return self._fault

    def set(self, fault: FaultConfig) -> None:
        """Put ``fault`` in force from the next reading on (``FaultConfig()`` clears it)."""
        with self._lock:
            self._fault = fault
            code = [
                FAULT_KINDS.index(fault.kind),
                MODALITY_KINDS.index(fault.modality) if fault.modality else 99,
            ]
            self._rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0xFA17, *code]))
            self._stuck: np.ndarray | None = None

    def active_at(self, stamp_ns: int) -> bool:
        """Whether the fault is on at ``stamp_ns`` (on the clock of the readings passed so far)."""
        f = self._fault
        if not f.active or self._t0 is None:
            return False
        t = (stamp_ns - self._t0) / 1e9
        return t >= f.start_s and (f.stop_s == 0 or t < f.stop_s)

    def apply(self, modality: str, stamp_ns: int, value: np.ndarray) -> np.ndarray:
        """What the sensor of kind ``modality`` reports at ``stamp_ns`` instead of ``value``.

        ``value`` is not modified; an unfaulted reading is returned as it is.
        """
        if modality not in MODALITY_KINDS:
            return value
        with self._lock:
            last = self._last.get(modality)
            if self._t0 is None or (last is not None and stamp_ns < last):
                self._restart(stamp_ns)
            self._last[modality] = stamp_ns
            signal = value[..., :IMU_SIGNAL] if modality == "imu" else value
            stats = self._stats.setdefault(modality, _RunningStd(frame=modality in FRAME_KINDS))
            history = self._history.setdefault(modality, deque())
            previous = history[-1][1] if history else None
            history.append((stamp_ns, value))
            while history and history[0][0] < stamp_ns - MAX_FAULT_DELAY_MS * 1e6:
                history.popleft()
            f = self._fault
            if f.modality != modality or not self.active_at(stamp_ns):
                if f.modality == modality:
                    self._stuck = None
                stats.add(signal)
                return value
            out = self._faulted(f, stamp_ns, value, signal, stats, history, previous)
            stats.add(signal)
            return out

    def _restart(self, stamp_ns: int) -> None:
        self._t0 = stamp_ns
        self._last.clear()
        self._history.clear()
        self._stuck = None

    def _faulted(
        self,
        f: FaultConfig,
        stamp_ns: int,
        value: np.ndarray,
        signal: np.ndarray,
        stats: _RunningStd,
        history: deque[tuple[int, np.ndarray]],
        previous: np.ndarray | None,
    ) -> np.ndarray:
        if f.kind == "stuck":
            if self._stuck is None:
                self._stuck = (previous if previous is not None else value).copy()
            return self._stuck.copy()
        if f.kind == "delay":
            due = stamp_ns - round(f.delay_ms * 1e6)
            for stamp, past in reversed(history):  # from the newest: delay_ms of readings to skip
                if stamp <= due:
                    return past.copy()
            return history[0][1].copy()
        out = value.copy()
        target = out[..., :IMU_SIGNAL] if f.modality == "imu" else out
        if f.kind == "zero" or f.kind == "blackout":
            target[...] = 0
        elif f.kind == "occlude":
            target[:, target.shape[1] // 2 :] = 0
        else:  # noise or bias, in units of the signal's own std
            std = stats.std(signal) * f.magnitude
            shift = self._rng.standard_normal(signal.shape) * std if f.kind == "noise" else std
            faulted = signal.astype(np.float64) + shift
            if target.dtype == np.uint8:
                faulted = np.clip(np.rint(faulted), 0, 255)
            elif f.modality == "depth":
                faulted = np.maximum(faulted, 0.0)  # depth cannot be negative (0 = no return)
            target[...] = faulted.astype(target.dtype)
        return out


def fault_message(kind: str, msg: Any, injector: FaultInjector) -> Any:
    """``msg`` (a ``rosbags`` message of sensor kind ``kind``) as the faulted sensor would send it.

    The message is converted (:func:`~core.data.convert.convert`), faulted and rebuilt
    with its header (stamp, frame id): colour images as ``rgb8``, depth in its own encoding (mm for
    ``16UC1``/``mono16``, metres otherwise), tactile as ``32FC1``, an IMU with its own orientation, a
    joint state with all of its joints. A message the injector leaves alone is returned as it is.
    """
    names = list(msg.name) if kind == "joints" else ()
    stamp, value = convert(kind, msg, names)
    out = injector.apply(kind, stamp, value)  # also keeps the signal statistics and the history
    if out is value:
        return msg
    frame = getattr(msg.header, "frame_id", "")
    if kind == "image":
        return image_msg(stamp, frame, out, "rgb8")
    if kind == "depth":
        if msg.encoding in ("16UC1", "mono16"):
            mm = np.clip(np.rint(out * DEPTH_MM_PER_M), 0, 65535).astype(np.uint16)
            return image_msg(stamp, frame, mm, msg.encoding)
        return image_msg(stamp, frame, out.astype(np.float32), "32FC1")
    if kind == "tactile":
        return image_msg(stamp, frame, out.astype(np.float32), "32FC1")
    if kind == "wrench":
        return wrench_msg(stamp, frame, out)
    if kind == "imu":
        q = msg.orientation
        return imu_msg(stamp, frame, out[:3], out[3:6], np.array([q.w, q.x, q.y, q.z]))
    if kind == "joints":
        faulted = joint_state_msg(stamp, names, out)
        faulted.header.frame_id = frame
        return faulted
    raise ValueError(f"no message builder for kind {kind!r}")
