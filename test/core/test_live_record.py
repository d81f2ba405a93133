"""core.eval.live: a live run's poses scored against the ground truth in bounded memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from structalign_ros.core.data.dataset import POSE_TOLERANCE_NS
from structalign_ros.core.eval.live import TRUTH_KEEP_NS, PoseScorer, WeightTrace, rotation_deg
from structalign_ros.core.learn.rotations import geodesic_angle, quaternion_to_matrix

MS = 1_000_000


def random_pose(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    return np.concatenate([rng.normal(size=3), q / np.linalg.norm(q)])


def brute_force(poses: list[tuple[int, np.ndarray]], truth: list[tuple[int, np.ndarray]]) -> np.ndarray:
    """Every pose against the nearest ground truth of the whole run, within the tolerance."""
    stamps = np.array([s for s, _ in truth])
    rows = []
    for stamp, pose in poses:
        j = int(np.argmin(np.abs(stamps - stamp)))
        if abs(stamps[j] - stamp) > POSE_TOLERANCE_NS:
            continue
        gt = truth[j][1]
        rows.append((stamp * 1e-9, 1000 * np.linalg.norm(pose[:3] - gt[:3]), rotation_deg(pose[3:], gt[3:])))
    return np.array(rows).reshape(-1, 3)


def compose(q: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    """``q`` followed by a rotation of ``angle`` rad about ``axis`` (quaternions ``[x, y, z, w]``)."""
    r = np.concatenate([np.sin(angle / 2) * axis / np.linalg.norm(axis), [np.cos(angle / 2)]])
    (x1, y1, z1, w1), (x2, y2, z2, w2) = q, r
    return np.array(
        [
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
        ]
    )


def test_rotation_deg_is_the_geodesic_angle_even_for_tiny_rotations() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):  # against the rotation-matrix measure eval uses
        q1, q2 = random_pose(rng)[3:], random_pose(rng)[3:]
        R1, R2 = (quaternion_to_matrix(torch.from_numpy(q)) for q in (q1, q2))
        assert rotation_deg(q1, q2) == pytest.approx(float(torch.rad2deg(geodesic_angle(R1, R2))), rel=1e-6)
    q = random_pose(rng)[3:]
    for angle in (2.0, 1e-3, 1e-7):  # known angles, down to where arccos would lose them
        turned = compose(q, rng.normal(size=3), angle)
        assert rotation_deg(q, turned) == pytest.approx(np.degrees(angle), rel=1e-6)
        assert rotation_deg(q, -turned) == pytest.approx(np.degrees(angle), rel=1e-6)  # -q: the same


def test_poses_arriving_before_or_after_their_truth_score_as_the_whole_run_would() -> None:
    rng = np.random.default_rng(1)
    truth = [(t * 10 * MS, random_pose(rng)) for t in range(1, 600)]  # 100 Hz for 6 s
    poses = [(int(t * 16.7 * MS) + 3 * MS, random_pose(rng)) for t in range(1, 350)]  # ~60 Hz
    poses.append((7_000 * MS, random_pose(rng)))  # after the last ground truth by more than tolerance
    scorer = PoseScorer()
    # arrival order: each pose a random few ms before or after the ground truth of its stamp
    events = [(s, 0, i) for i, (s, _) in enumerate(truth)]
    events += [(s + int(rng.integers(-30, 30)) * MS, 1, i) for i, (s, _) in enumerate(poses)]
    for _, kind, i in sorted(events):
        if kind == 0:
            scorer.add_truth(*truth[i])
        else:
            scorer.add_pose(*poses[i])
    got = scorer.errors()
    want = brute_force(poses[:-1], truth)
    order = np.argsort(got[:, 0])
    np.testing.assert_allclose(got[order], want, rtol=1e-12)
    assert scorer.unmatched == 0  # the last pose is still waiting for ground truth after it
    # the ground truth kept covers TRUTH_KEEP_NS, not the run
    assert len(scorer._truth_stamps) <= TRUTH_KEEP_NS // (10 * MS) + 1


def test_a_pose_without_ground_truth_near_it_is_counted_not_scored() -> None:
    rng = np.random.default_rng(2)
    scorer = PoseScorer()
    scorer.add_truth(100 * MS, random_pose(rng))
    scorer.add_pose(100 * MS + POSE_TOLERANCE_NS + MS, random_pose(rng))  # waits: truth may follow
    assert scorer.unmatched == 0
    scorer.add_truth(200 * MS, random_pose(rng))  # none within the tolerance on either side
    assert scorer.unmatched == 1 and len(scorer.errors()) == 0
    scorer.add_truth(200 * MS, random_pose(rng))  # a repeated stamp is ignored, and counted
    assert scorer.late == 1


def test_recorded_series_cost_a_few_bytes_per_message() -> None:
    rng = np.random.default_rng(3)
    scorer, weights = PoseScorer(), WeightTrace()
    names = ["rgb", "depth", "joints"]
    for t in range(1, 20_001):
        stamp = t * 10 * MS
        scorer.add_truth(stamp, random_pose(rng))
        scorer.add_pose(stamp, random_pose(rng))
        weights.add(t * 0.01, stamp, names, [0.2, 0.3, 0.5])
    assert len(scorer.errors()) == 20_000 and len(weights) == 20_000
    assert scorer.nbytes < 20_000 * 24 * 1.2  # three doubles a pose, plus the array's spare room
    assert weights.nbytes < 20_000 * (8 + 8 + 3 * 4) * 1.2
    received, stamps, values = weights.series()
    assert values.shape == (20_000, 3) and stamps[-1] == 20_000 * 10 * MS and received[0] == 0.01
    weights.add(200.01, 0, ["rgb"], [1.0])  # another modality list: the trace starts again
    assert len(weights) == 1 and weights.names == ["rgb"]
