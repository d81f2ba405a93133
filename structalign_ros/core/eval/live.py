"""Recording a live run's outputs in memory that does not grow with anything but the run's length:
end-effector poses scored against the ground truth as they arrive (:class:`PoseScorer`) and the
published modality weights (:class:`WeightTrace`), each kept as flat arrays of numbers.

``structalign demo`` and ``bench/bench_live.py`` record with these in the perception node's process,
so that a long soak measures the node's memory, not the recorder's: a published pose costs 24 bytes
once scored, a weight message 16 + 4 × M bytes, and the ground truth is kept only for
:data:`TRUTH_KEEP_NS`.
"""

from __future__ import annotations

import bisect
import collections
import math
import sys
from array import array

import numpy as np

from structalign_ros.core.data.dataset import POSE_TOLERANCE_NS

TRUTH_KEEP_NS = 5_000_000_000  # ground truth kept this long behind the newest: a pose is late by ms
PENDING_MAX = 4096  # poses waiting for the ground truth after them; the oldest are dropped beyond


def rotation_deg(q1: np.ndarray, q2: np.ndarray) -> float:
    """Rotation angle between two ``[x, y, z, w]`` quaternions, in degrees (eval's measure), computed
    without ``arccos`` so that small angles keep their precision."""
    a = q1 / np.linalg.norm(q1)
    b = q2 / np.linalg.norm(q2)
    if float(a @ b) < 0.0:
        b = -b  # q and -q are the same rotation
    return math.degrees(4.0 * math.atan2(float(np.linalg.norm(a - b)), float(np.linalg.norm(a + b))))


class PoseScorer:
    """Scores published poses against the ground-truth pose with the nearest stamp (within
    ``POSE_TOLERANCE_NS``, as training labels windows), in whatever order the two streams arrive.

    A pose is scored once the ground truth has reached its stamp (both neighbours are then known) or
    has passed it by :data:`TRUTH_KEEP_NS`; ground truth older than that is forgotten. Counters:
    ``unmatched`` (no ground truth within the tolerance), ``late`` (ground truth with a stamp not after
    the newest: ignored), ``overflow`` (poses dropped while :data:`PENDING_MAX` waited).
    """

    def __init__(self) -> None:
        self._truth_stamps: collections.deque[int] = collections.deque()
        self._truth_poses: collections.deque[np.ndarray] = collections.deque()
        self._pending: collections.deque[tuple[int, np.ndarray]] = collections.deque()
        self._rows = array("d")  # stamp (s), position error (mm), orientation error (deg), flat
        self.unmatched = self.late = self.overflow = 0

    @property
    def newest_truth_ns(self) -> int:
        """The newest ground-truth stamp (0 before any)."""
        return self._truth_stamps[-1] if self._truth_stamps else 0

    def add_truth(self, stamp_ns: int, pose: np.ndarray) -> None:
        """A ground-truth pose ``[x, y, z, qx, qy, qz, qw]``."""
        if self._truth_stamps and stamp_ns <= self._truth_stamps[-1]:
            self.late += 1
            return
        self._truth_stamps.append(stamp_ns)
        self._truth_poses.append(np.asarray(pose, dtype=np.float64))
        while self._truth_stamps[0] < stamp_ns - TRUTH_KEEP_NS:
            self._truth_stamps.popleft()
            self._truth_poses.popleft()
        self._score_ready()

    def add_pose(self, stamp_ns: int, pose: np.ndarray) -> None:
        """A published pose ``[x, y, z, qx, qy, qz, qw]``."""
        if len(self._pending) >= PENDING_MAX:
            self._pending.popleft()
            self.overflow += 1
        self._pending.append((stamp_ns, np.asarray(pose, dtype=np.float64)))
        self._score_ready()

    def errors(self) -> np.ndarray:
        """``(n, 3)``: stamp (s), position error (mm), orientation error (deg) of every scored pose,
        in the order they were scored."""
        return np.array(self._rows, dtype=np.float64).reshape(-1, 3)

    @property
    def nbytes(self) -> int:
        """Bytes allocated for the scored series (what grows with the run)."""
        return sys.getsizeof(self._rows)

    def _score_ready(self) -> None:
        newest = self.newest_truth_ns
        kept = len(self._pending)
        for _ in range(kept):
            stamp, pose = self._pending.popleft()
            if stamp <= newest or stamp < newest - TRUTH_KEEP_NS:
                self._score(stamp, pose)
            else:
                self._pending.append((stamp, pose))  # its ground truth has not arrived yet

    def _score(self, stamp: int, pose: np.ndarray) -> None:
        stamps = self._truth_stamps
        i = bisect.bisect_left(stamps, stamp)
        near = [j for j in (i - 1, i) if 0 <= j < len(stamps)]
        if not near:
            self.unmatched += 1
            return
        j = min(near, key=lambda k: abs(stamps[k] - stamp))
        if abs(stamps[j] - stamp) > POSE_TOLERANCE_NS:
            self.unmatched += 1
            return
        truth = self._truth_poses[j]
        pos_mm = 1000.0 * float(np.linalg.norm(pose[:3] - truth[:3]))
        self._rows.extend((stamp * 1e-9, pos_mm, rotation_deg(pose[3:], truth[3:])))


class WeightTrace:
    """Every published modality-weight vector: its arrival time (monotonic s), stamp and values."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._clear()

    def _clear(self) -> None:
        self._times = array("d")
        self._stamps = array("q")
        self._values = array("f")

    def __len__(self) -> int:
        return len(self._times)

    def add(self, received_s: float, stamp_ns: int, names: list[str], values: list[float]) -> None:
        """One message; a change of the modality list starts the trace again (its values would not
        line up with the old columns)."""
        if names != self.names:
            self._clear()
            self.names = list(names)
        self._times.append(received_s)
        self._stamps.append(stamp_ns)
        self._values.extend(values)

    def series(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(arrival times s ``(n,)``, stamps ns ``(n,)``, weights ``(n, M)``)."""
        values = np.array(self._values, dtype=np.float64).reshape(len(self._times), len(self.names))
        return np.array(self._times), np.array(self._stamps, dtype=np.int64), values

    @property
    def nbytes(self) -> int:
        """Bytes allocated for the trace (what grows with the run)."""
        return sum(sys.getsizeof(a) for a in (self._times, self._stamps, self._values))
