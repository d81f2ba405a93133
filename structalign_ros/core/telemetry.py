"""Latency percentiles and counted events of a running pipeline, for diagnostics and benchmarks."""

from __future__ import annotations

import threading
from collections import Counter, deque

import numpy as np


class Latencies:
    """The last ``keep`` durations of each named stage, in milliseconds; thread-safe.

    Percentiles are over a sliding window so that diagnostics show the present, not the start-up.
    """

    def __init__(self, keep: int = 2048) -> None:
        self._keep = keep
        self._lock = threading.Lock()
        self._stages: dict[str, deque[float]] = {}

    def add(self, stage: str, ms: float) -> None:
        with self._lock:
            self._stages.setdefault(stage, deque(maxlen=self._keep)).append(float(ms))

    def samples(self, stage: str) -> np.ndarray:
        """The kept durations of ``stage`` (empty if none)."""
        with self._lock:
            return np.array(self._stages.get(stage, ()), dtype=np.float64)

    def percentiles(self, qs: tuple[int, ...] = (50, 95, 99)) -> dict[str, dict[str, float]]:
        """``{stage: {"p50": ms, ...}}`` for every stage with at least one sample."""
        with self._lock:
            snapshot = {k: np.array(v) for k, v in self._stages.items() if v}
        return {k: {f"p{q}": float(np.percentile(v, q)) for q in qs} for k, v in snapshot.items()}


class Events:
    """Counted events with a reason (``"wrench: wrench has 1 NaN/Inf value(s)"``); thread-safe.

    :meth:`add` says whether this occurrence should be logged: the 1st, 2nd, 4th, 8th... of each
    reason, so a sensor that keeps sending garbage is reported without flooding the log.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def add(self, reason: str, n: int = 1) -> bool:
        with self._lock:
            before = self.counts[reason]
            self.counts[reason] = before + n
        return before.bit_length() != (before + n).bit_length()  # the count crossed a power of two

    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)
