"""Latency percentiles and counted events of a running pipeline, for diagnostics and benchmarks."""

from __future__ import annotations

import re
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


NODE = "node"  # the source of reasons that are not a sensor's (inference, checkpoints, the trainer)
OTHER = "other"
# The fixed vocabulary of reason codes. A reason is ``"<source>: <detail>"`` (the source a modality
# name or "ground truth") or one of the node's own; its code is the first whose pattern matches. A
# detail's numbers and names (sizes, joint names, encodings) vary without bound, codes do not.
NODE_CODES = (
    ("internal_error", r"^internal error"),
    ("inference_behind", r"^window dropped: inference fell behind"),
    ("checkpoint_failed", r"^checkpoint:"),
    ("empty_window", r"^window with no usable modality"),
    ("non_finite_output", r"^non-finite model output"),
    ("trainer_start_failed", r"^online trainer could not start"),
    ("trainer_pause_timeout", r"^online trainer did not pause"),
)
SOURCE_CODES = (
    ("zero_stamp", r"^stamp is zero"),
    ("bad_stamp", r"^stamp (nanosec|sec)="),
    ("bad_encoding", r"^(unknown image|camera image|depth image|tactile) encoding "),
    ("empty_image", r"^empty image"),
    ("bad_size", r"^step=|^data has \d+ bytes"),
    ("non_finite", r"^\S+ has \d+ NaN/Inf value"),
    ("negative_depth", r"^depth image has \d+ negative value"),
    ("joints_missing", r"^joint\(s\) .* missing from the message"),
    ("joints_repeated", r"^joint names repeat"),
    ("joints_count", r"^\S+ has \d+ value\(s\) for \d+ joint name"),
    ("no_joints", r"^no joint names configured"),
    ("bad_quaternion", r"^pose quaternion has norm"),
    ("shape_mismatch", r"^window shape"),
    ("not_enabled", r"^not an enabled modality"),
    ("unknown_kind", r"^no converter for modality kind"),
)
CODES = (*(code for code, _ in (*NODE_CODES, *SOURCE_CODES)), OTHER)


def reason_code(reason: str) -> tuple[str, str]:
    """``(source, code)`` of a counted reason: ``"wrench: wrench has 3 NaN/Inf value(s)"`` ->
    ``("wrench", "non_finite")``; the node's own reasons have source :data:`NODE`; a detail no pattern
    knows is :data:`OTHER`."""
    for code, pattern in NODE_CODES:
        if re.search(pattern, reason):
            return NODE, code
    source, sep, detail = reason.partition(": ")
    if not sep:
        return NODE, OTHER
    for code, pattern in SOURCE_CODES:
        if re.search(pattern, detail):
            return source, code
    return source, OTHER


class Events:
    """Counted events with a reason (``"wrench: wrench has 1 NaN/Inf value(s)"``); thread-safe and
    bounded, however many distinct reason texts a faulty sensor sends.

    - :attr:`counts`: exact reason texts, at most ``max_texts`` distinct ones (the first seen; an
      occurrence of a text beyond them is counted only by its code). For logs and tests.
    - :meth:`by_code`: counts per ``(source, code)`` of :func:`reason_code`, a fixed vocabulary per
      source; what diagnostics publish. :attr:`latest`: the newest reason text in full.

    :meth:`add` says whether this occurrence should be logged: the 1st, 2nd, 4th, 8th... of each
    code, so a sensor that keeps sending garbage is reported without flooding the log.
    """

    def __init__(self, max_texts: int = 64) -> None:
        self._lock = threading.Lock()
        self.max_texts = max_texts
        self.counts: Counter[str] = Counter()
        self.codes: Counter[tuple[str, str]] = Counter()
        self.latest = ""
        self._total = 0

    def add(self, reason: str, n: int = 1) -> bool:
        key = reason_code(reason)
        with self._lock:
            before = self.codes[key]
            self.codes[key] = before + n
            if reason in self.counts or len(self.counts) < self.max_texts:
                self.counts[reason] += n
            self.latest = reason
            self._total += n
        return before.bit_length() != (before + n).bit_length()  # the count crossed a power of two

    def total(self) -> int:
        with self._lock:
            return self._total

    def snapshot(self) -> dict[str, int]:
        """The exact texts' counts (at most ``max_texts`` of them)."""
        with self._lock:
            return dict(self.counts)

    def by_code(self) -> dict[tuple[str, str], int]:
        """Counts per ``(source, code)``."""
        with self._lock:
            return dict(self.codes)
