"""Camera-pivot windows over multi-rate sensor streams: one :class:`WindowAssembler` for live and replay.

For every pivot (camera) frame at stamp ``t`` a :class:`Window` holds, for each other enabled modality,
its samples in ``[t - span, t]``:

- frame kinds (``image``, ``depth``) contribute the latest frame at or before ``t``;
- series kinds (wrench, imu, joints, tactile) are resampled to ``samples`` values by splitting the span
  into that many equal bins and averaging every sample that falls in a bin. Every in-span sample is
  therefore used exactly once per window (an ApproximateTime-style sync would keep one message per
  topic, about 3 % of a 1 kHz stream at 30 Hz). A bin no sample fell in (a stream slower than
  ``samples / span``) is linearly interpolated from its neighbouring bins.

A stream's part of a window is computed once: for a series on the first of its samples later than
``t + reorder`` (so a sample arriving out of order within the tolerance still lands in its window),
for a frame stream on its first frame at or after ``t`` (an aligned depth frame shares the camera's
stamp, and waiting for the next one would add a frame period of latency). The work of one window is
thereby spread over the pushes of several streams instead of landing on one. The window
is emitted when every stream has done so, or when the newest stamp seen passes ``t + timeout``; a
stream that has not caught up by then, has no sample in the span, or has a gap in it longer than
``max(3 periods, span / samples, max_gap_s)`` is masked (zeros, ``mask[name] = False``), never invented.

Time is the data's own: the assembler's clock is the newest stamp pushed, so a replay is deterministic
and a live node needs no timer. Stamps are integer nanoseconds.
"""

from __future__ import annotations

import bisect
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from structalign_ros.core.config import FRAME_KINDS, ConfigError, ModalityConfig, WindowConfig

NS = 1_000_000_000
# A stream buffer grows (doubling) up to this multiple of its nominal size when a sensor publishes
# faster than its configured rate; past that the oldest samples are dropped and counted.
MAX_GROWTH = 16
# The counts of a one-frame part, shared by every window (read-only so no window can alter another's).
ONE = np.ones(1, dtype=np.int64)
ONE.setflags(write=False)


@dataclass
class Window:
    """One camera-pivot window.

    Attributes:
        stamp_ns: the pivot frame's stamp; everything computed from this window carries it.
        data: modality -> ``(samples, *sample_shape)`` array: float32 for series, the frame's own dtype
            for frames (``(1, H, W, 3)`` uint8 RGB, ``(1, H, W)`` float32 depth). Zeros where masked.
        mask: modality -> whether ``data`` holds real measurements.
        counts: modality -> ``(samples,)`` int, how many raw samples were averaged into each bin
            (0 for an interpolated bin; for frames 1 or 0).
    """

    stamp_ns: int
    data: dict[str, np.ndarray]
    mask: dict[str, bool]
    counts: dict[str, np.ndarray]


@dataclass
class AssemblerStats:
    """What the assembler did, for diagnostics: every drop and mask is counted with its reason."""

    windows: int = 0
    resets: int = 0
    masked: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)


class _Stream:
    """A growable, compacting buffer of one non-pivot stream: O(1) amortised append, sorted stamps.

    Series samples are copied into one preallocated float32 array; frames are held by reference
    (an object array), because copying a camera frame on every push would cost more than all the
    high-rate streams together.
    """

    def __init__(
        self, name: str, cfg: ModalityConfig, span_ns: int, keep_ns: int, reorder_ns: int, gap_ns: int
    ) -> None:
        self.name = name
        self.frame = cfg.kind in FRAME_KINDS
        # The stream can contribute to the window of pivot t once it holds a stamp > t + wait_ns.
        self.wait_ns = -1 if self.frame else reorder_ns
        self.samples = cfg.samples
        period_ns = int(NS / cfg.rate_hz)
        self.max_gap_ns = max(3 * period_ns, span_ns // cfg.samples, gap_ns)
        self.capacity = max(8, 2 * int(np.ceil(keep_ns / period_ns)) + 4)
        self.max_capacity = MAX_GROWTH * self.capacity
        self.stamps = np.empty(self.capacity, dtype=np.int64)
        self.values: np.ndarray | None = None  # allocated on the first sample, when its shape is known
        self.shape: tuple[int, ...] = (0,)
        self.dtype = np.dtype(np.float32)
        self.end = 0
        self.last = -1  # newest stamp held, -1 when empty
        # Stamps of samples that came after a gap longer than max_gap_ns; a window containing one
        # is masked. Kept as a short list so the window check needs no pass over the samples.
        self.gap_ends: list[int] = []
        # Window-relative bin edges [0, e_1, ..., e_{N-1}, span + 1]: one searchsorted gives the span's
        # bounds and every bin's start at once.
        self.edges = np.append((np.arange(cfg.samples, dtype=np.int64) * span_ns) // cfg.samples, span_ns + 1)

    def clear(self) -> None:
        self.end = 0
        self.last = -1
        self.gap_ends.clear()

    def append(self, stamp: int, value: np.ndarray, keep_from: int, stats: AssemblerStats) -> None:
        if self.values is None:
            self.shape = value.shape
            if self.frame:
                self.dtype = value.dtype
                self.values = np.empty(self.capacity, dtype=object)
            else:
                self.values = np.empty((self.capacity, *value.shape), dtype=np.float32)
        elif value.shape != self.shape:
            stats.dropped[f"{self.name}: shape {value.shape} != {self.shape}"] += 1
            return
        if self.end == self.capacity:
            self._compact(keep_from, stats)
        end = self.end
        if stamp > self.last:
            if end and stamp - self.last > self.max_gap_ns:
                self.gap_ends.append(stamp)
            self.stamps[end] = stamp
            self.values[end] = value
            self.last = stamp
        else:
            # Out of order within the reorder tolerance: sort it in (rare, so the shift is affordable).
            pos = int(np.searchsorted(self.stamps[:end], stamp))
            if self.stamps[pos] == stamp:
                stats.dropped[f"{self.name}: duplicate stamp"] += 1
                return
            self.stamps[pos + 1 : end + 1] = self.stamps[pos:end]
            self.values[pos + 1 : end + 1] = self.values[pos:end]
            self.stamps[pos] = stamp
            self.values[pos] = value
            # A sample filling a hole may close a recorded gap: recompute them (rare, so O(n) is fine).
            ts = self.stamps[: end + 1]
            self.gap_ends = [int(t) for t in ts[1:][np.diff(ts) > self.max_gap_ns]]
        self.end = end + 1

    def _compact(self, keep_from: int, stats: AssemblerStats) -> None:
        assert self.values is not None
        first = int(np.searchsorted(self.stamps[: self.end], keep_from))
        live = self.end - first
        if live > self.capacity // 2 and self.capacity < self.max_capacity:
            self.capacity *= 2
            self.stamps = np.resize(self.stamps, self.capacity)
            self.values = np.resize(self.values, (self.capacity, *self.values.shape[1:]))
            return
        if live == self.capacity:  # at the growth limit and everything still needed: lose the oldest
            first = self.capacity // 4
            stats.dropped[f"{self.name}: buffer overflow (publishing above rate_hz?)"] += first
            live = self.end - first
        self.stamps[:live] = self.stamps[first : self.end]
        self.values[:live] = self.values[first : self.end]
        self.values[live : self.end] = None if self.frame else 0  # let dropped frames be freed
        self.end = live
        if live:
            self.gap_ends = [e for e in self.gap_ends if e > self.stamps[0]]

    def empty_part(self) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros((self.samples, *self.shape), dtype=self.dtype), np.zeros(self.samples, dtype=np.int64)

    def part(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, bool]:
        """This stream's ``(data, counts, valid)`` for the window ``[lo, hi]``."""
        assert self.values is not None
        # Methods and plain slicing rather than np.* wrappers: each call here is on a per-message
        # latency budget (see bench/bench_data.py).
        bounds = self.stamps[: self.end].searchsorted(lo + self.edges)
        i, j = int(bounds[0]), int(bounds[-1])
        gap = self.max_gap_ns
        if (
            j == i
            or self.stamps[i] - lo > gap
            or hi - self.stamps[j - 1] > gap
            or any(lo < e <= hi for e in self.gap_ends)
        ):
            return (*self.empty_part(), False)
        if self.frame:
            return self.values[j - 1][None], ONE, True
        counts = bounds[1:] - bounds[:-1]
        # reduceat over values[:j] with starts >= i reads only the span.
        values = self.values[:j]
        shape = (-1,) + (1,) * (values.ndim - 1)
        if counts.all():
            sums = np.add.reduceat(values, bounds[:-1], axis=0)
            return np.divide(sums, counts.reshape(shape), out=sums, casting="unsafe"), counts, True
        filled = counts > 0
        sums = np.add.reduceat(values, bounds[:-1][filled], axis=0)
        means = sums / counts[filled].reshape(shape)
        # Some bins are empty (a stream slower than samples/span): interpolate them between the
        # neighbouring filled bins; bins before the first / after the last filled one hold its value.
        full = np.flatnonzero(filled)
        k = np.arange(self.samples)
        right = np.searchsorted(full, k)
        beyond = right == full.size
        right = np.minimum(right, full.size - 1)
        left = np.where(beyond | (full[right] == k), right, np.maximum(right - 1, 0))
        span = (full[right] - full[left]).astype(np.float64)
        w = np.divide(k - full[left], span, out=np.zeros(self.samples), where=span > 0).reshape(shape)
        out = means[left] * (1.0 - w) + means[right] * w
        return out.astype(np.float32), counts, True


@dataclass
class _Pending:
    t: int
    frame: np.ndarray
    parts: dict[str, tuple[np.ndarray, np.ndarray, bool]] = field(default_factory=dict)


class WindowAssembler:
    """Cut pushed samples into camera-pivot windows (see the module docstring for the rules).

    Args:
        modalities: name -> config; disabled ones are ignored.
        window: span, timeout, pivot, reorder tolerance and reset threshold.

    ``push`` returns the windows that became complete, oldest first; ``flush`` emits the rest at the
    end of a replay. Samples of unknown modalities are counted and dropped.
    """

    def __init__(self, modalities: Mapping[str, ModalityConfig], window: WindowConfig) -> None:
        enabled = {n: m for n, m in modalities.items() if m.enabled}
        if window.pivot not in enabled or enabled[window.pivot].kind != "image":
            raise ConfigError(f"window.pivot={window.pivot!r} must name an enabled image modality")
        self.pivot = window.pivot
        self.span_ns = round(window.span_s * NS)
        self.timeout_ns = round(window.timeout_s * NS)
        self.reorder_ns = round(window.reorder_s * NS)
        self.reset_ns = round(window.reset_s * NS)
        keep_ns = self.span_ns + self.timeout_ns + self.reorder_ns
        self.streams = {
            n: _Stream(n, m, self.span_ns, keep_ns, self.reorder_ns, round(window.max_gap_s * NS))
            for n, m in enabled.items()
            if n != self.pivot
        }
        self._stream_list = list(self.streams.values())
        self.stats = AssemblerStats()
        # Frames waiting for their window. Bounded without a cap: every frame advances the clock, so
        # a frame waits at most timeout_s (about timeout_s x camera rate frames pending).
        self._pending: deque[_Pending] = deque()
        self.clock = -1  # newest stamp pushed
        self._pivot_last = -1  # newest pivot stamp pushed
        self._emitted_t = -1  # newest pivot emitted
        self._pivot_shape: tuple[int, ...] | None = None  # of the first frame; windows stack later

    @property
    def pending(self) -> int:
        """Camera frames waiting for their window (for diagnostics)."""
        return len(self._pending)

    @property
    def shapes_known(self) -> bool:
        """Whether every stream has delivered a sample, so a masked entry can have its real shape."""
        return all(s.values is not None for s in self._stream_list)

    def push(self, name: str, stamp_ns: int, value: np.ndarray) -> list[Window]:
        """Add one sample (``value`` as :mod:`~.convert` returns it)."""
        out: list[Window] = []
        if stamp_ns < self.clock - self.reset_ns:
            # Time went backwards (a bag looped or the next bag began): finish what is pending with
            # the data at hand, then start over.
            out = self.flush()
            self.reset()
            self.stats.resets += 1
        self.clock = max(self.clock, stamp_ns)
        if name == self.pivot:
            self._add_pivot(stamp_ns, value)
        else:
            stream = self.streams.get(name)
            if stream is None:
                self.stats.dropped[f"{name}: not an enabled modality"] += 1
                return out
            # Out-of-order is judged per stream: other streams running ahead is normal latency.
            if stamp_ns < stream.last - self.reorder_ns:
                self.stats.dropped[f"{name}: older than reorder_s"] += 1
                return out
            keep_from = self._keep_from()
            stream.append(stamp_ns, value, keep_from, self.stats)
            for p in self._pending:
                if stamp_ns <= p.t + stream.wait_ns:
                    break
                if name not in p.parts:
                    p.parts[name] = stream.part(p.t - self.span_ns, p.t)
        if self._pending:
            self._emit_ready(out)
        return out

    def advance(self, now_ns: int) -> list[Window]:
        """Move the clock to ``now_ns`` without data and emit the windows whose timeout expired.

        For a live node's timer, so windows still come out when every sensor, camera included, has
        gone quiet; ``now_ns`` must be on the sensors' clock (the stamps' time base).
        """
        self.clock = max(self.clock, now_ns)
        out: list[Window] = []
        self._emit_ready(out)
        return out

    def flush(self) -> list[Window]:
        """Emit every pending window now, at the end of a replay or before a reset.

        No more data will come for these windows, so each stream's part is judged on what it holds
        (the gap rule still masks a stream that stopped early) instead of waiting for the timeout.
        """
        out = []
        while self._pending:
            p = self._pending.popleft()
            for name, s in self.streams.items():
                if name not in p.parts and s.values is not None:
                    p.parts[name] = s.part(p.t - self.span_ns, p.t)
            out.append(self._finish(p))
        return out

    def reset(self) -> None:
        """Forget all buffered samples and pending frames (the statistics are kept)."""
        for s in self._stream_list:
            s.clear()
        self._pending.clear()
        self.clock = -1
        self._pivot_last = -1
        self._emitted_t = -1

    def _keep_from(self) -> int:
        oldest = self._pending[0].t if self._pending else self.clock - self.timeout_ns - self.reorder_ns
        return oldest - self.span_ns

    def _add_pivot(self, t: int, frame: np.ndarray) -> None:
        if self._pivot_shape is None:
            self._pivot_shape = frame.shape
        elif frame.shape != self._pivot_shape:
            self.stats.dropped[f"{self.pivot}: shape {frame.shape} != {self._pivot_shape}"] += 1
            return
        if t < self._pivot_last - self.reorder_ns:
            self.stats.dropped[f"{self.pivot}: older than reorder_s"] += 1
            return
        self._pivot_last = max(self._pivot_last, t)
        if t <= self._emitted_t:
            self.stats.dropped[f"{self.pivot}: frame older than the last window"] += 1
            return
        ts = [p.t for p in self._pending]
        pos = bisect.bisect_left(ts, t)
        if pos < len(ts) and ts[pos] == t:
            self.stats.dropped[f"{self.pivot}: duplicate stamp"] += 1
            return
        pending = _Pending(t, frame)
        # Streams already past t (the camera usually arrives last) contribute right away.
        for name, s in self.streams.items():
            if s.last > t + s.wait_ns:
                pending.parts[name] = s.part(t - self.span_ns, t)
        self._pending.insert(pos, pending)

    def _emit_ready(self, out: list[Window]) -> None:
        n_streams = len(self._stream_list)
        while self._pending:
            head = self._pending[0]
            if len(head.parts) < n_streams and self.clock < head.t + self.timeout_ns:
                return
            out.append(self._finish(self._pending.popleft()))

    def _finish(self, p: _Pending) -> Window:
        data = {self.pivot: p.frame[None]}
        mask = {self.pivot: True}
        counts = {self.pivot: ONE}
        for name, s in self.streams.items():
            part = p.parts.get(name)
            if part is None:
                self.stats.masked[f"{name}: not caught up by timeout"] += 1
                part = (*s.empty_part(), False)
            elif not part[2]:
                self.stats.masked[f"{name}: no data or a gap in the span"] += 1
            data[name], counts[name], mask[name] = part
        self.stats.windows += 1
        self._emitted_t = max(self._emitted_t, p.t)
        return Window(p.t, data, mask, counts)
