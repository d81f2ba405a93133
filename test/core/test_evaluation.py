"""core/eval/evaluation.py: contact ground truth, pose errors, retrieval, probes and the composed report."""

import math

import numpy as np
import torch

from structalign_ros.core.config import ModelConfig
from structalign_ros.core.data.batch import ModalitySpec
from structalign_ros.core.eval.evaluation import (
    CONTACT_FORCE_N,
    contact_labels,
    contact_probe,
    evaluate,
    mean_average_precision,
    object_speed,
    pose_errors,
    retrieval,
)
from structalign_ros.core.eval.synthetic import SyntheticWorld
from structalign_ros.core.learn.models import MultimodalModel
from structalign_ros.core.learn.rotations import matrix_to_rotation_6d, quaternion_to_matrix


def test_object_speed_of_a_constant_velocity_track():
    t = np.arange(0, 1_000_000_000, 10_000_000)  # 100 Hz for 1 s
    xyz = np.stack([0.05 * t / 1e9, np.zeros_like(t, dtype=float), np.full(len(t), 0.1)], axis=1)
    speed = object_speed(t, xyz, np.array([200_000_000, 500_000_000]))
    np.testing.assert_allclose(speed, 0.05, rtol=1e-6)
    assert object_speed(t[:1], xyz[:1], np.array([0])).tolist() == [0.0]


def test_contact_from_tactile_force_or_object_motion():
    world = SyntheticWorld(modalities=("rgb", "tactile"), image=16, tactile=4, steps=8)
    batch, _ = world.batch(4, seed=0)
    batch.inputs["tactile"].zero_()
    batch.mask[:] = True
    batch.inputs["tactile"][1, 2, 0, 0] = CONTACT_FORCE_N + 0.1  # one bin over the threshold
    batch.inputs["tactile"][2, 2] = (CONTACT_FORCE_N - 0.1) / 16  # spread below it
    batch.inputs["tactile"][3, 0, 0, 0] = 5.0
    batch.mask[3, 1] = False  # masked: its zeros/garbage are no evidence
    assert contact_labels(batch).tolist() == [0, 1, 0, 0]
    speed = torch.tensor([0.05, 0.0, 0.0, 0.0])
    assert contact_labels(batch, speed).tolist() == [1, 1, 0, 0]


def test_pose_errors_known_offset_and_rotation():
    q = torch.tensor([[0.0, 0.0, 0.0, 1.0], [0.0, 0.0, math.sin(math.pi / 4), math.cos(math.pi / 4)]])
    target = torch.cat([torch.zeros(2, 3), q], dim=1)
    r6 = matrix_to_rotation_6d(quaternion_to_matrix(torch.tensor([[0.0, 0.0, 0.0, 1.0]] * 2)))
    pred = torch.cat([torch.tensor([[0.01, 0.0, 0.0], [0.0, 0.0, 0.03]]), r6], dim=1)
    err = pose_errors(pred, target)
    assert math.isclose(err["position_mm_mean"], 20.0, rel_tol=1e-6)
    # 0 and 90 degrees; geodesic_angle clamps acos away from +-1 (gradient safety): ~0.1 deg at 0
    assert math.isclose(err["orientation_deg_mean"], 45.0, abs_tol=0.1)
    assert err["n"] == 2


def test_map_is_mean_reciprocal_rank():
    z = torch.eye(4)
    assert mean_average_precision(z, z) == 1.0
    gallery = z[[1, 0, 2, 3]] + 0.5 * z  # queries 0 and 1 find the other's item first: rank 2
    assert math.isclose(mean_average_precision(z, gallery), (0.5 + 0.5 + 1 + 1) / 4)


def test_retrieval_covers_every_ordered_pair_with_both_present():
    z = torch.randn(20, 3, 8)
    mask = torch.ones(20, 3, dtype=torch.bool)
    mask[:5, 2] = False
    out = retrieval(z, mask, ("a", "b", "c"))
    assert sorted(out) == sorted(["a->b", "a->c", "b->a", "b->c", "c->a", "c->b"])
    assert out["a->b"]["n"] == 20 and out["a->c"]["n"] == 15
    z[:, 1] = z[:, 0]
    assert retrieval(z, mask, ("a", "b", "c"))["a->b"]["R@1"] == 1.0


def test_retrieval_with_a_time_tolerance_counts_neighbouring_windows():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(20, 2, 8, generator=g)
    z[:, 1] = z[:, 0].roll(1, dims=0)  # window i's gallery twin is stored at row i + 1 (33 ms later)
    stamps = torch.arange(20) * 33_000_000
    mask = torch.ones(20, 2, dtype=torch.bool)
    res = retrieval(z, mask, ("a", "b"), stamps_ns=stamps, groups=torch.zeros(20, dtype=torch.long))["a->b"]
    assert res["R@1"] == 0.0
    assert res["R@1_tol"] == 19 / 20  # row 19's twin wrapped round to row 0, 627 ms away
    other = retrieval(z, mask, ("a", "b"), stamps_ns=stamps, groups=torch.arange(20))["a->b"]
    assert other["R@1_tol"] == 0.0  # a neighbour in another episode is no hit


def test_contact_probe_tests_on_held_out_episodes():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (60,), generator=g)
    features = torch.randn(60, 4, generator=g) * 0.1
    features[:, 0] += labels * 2.0
    groups = torch.arange(60) // 20
    res = contact_probe(features, labels, groups)
    assert res["accuracy"] == 1.0 and res["n"] == 60
    noise = contact_probe(torch.randn(60, 4, generator=g), labels, groups)
    assert noise["accuracy"] < 0.9
    one = contact_probe(features, labels, torch.zeros(60, dtype=torch.long))  # halves in time
    assert one is not None and one["accuracy"] == 1.0


def test_evaluate_composes_every_metric():
    world = SyntheticWorld(modalities=("rgb", "tactile", "wrench"), image=16, tactile=4, steps=8)
    first, _ = world.batch(16, seed=0)
    model = MultimodalModel(ModalitySpec.from_batch(first, world.kinds), ModelConfig(16, 8, 16))
    batches = [(world.batch(24, seed=s)[0], None, s % 2) for s in range(3)]
    report = evaluate(model, batches, geometry_windows=24)
    assert report["windows"] == 72 and report["episodes"] == 2
    assert set(report["contact"]) == {"fused", "rgb", "tactile", "wrench"}
    assert len(report["retrieval"]) == 6 and len(report["geometry"]) == 3
    assert math.isclose(sum(report["lambda"].values()), 1.0, rel_tol=1e-6)
    assert report["pose"]["n"] == 72 and report["pose"]["position_mm_mean"] > 0
    pair = report["geometry"]["rgb|tactile"]
    assert 0.0 <= pair["neighbourhood_preservation"] <= 1.0 and pair["gw_discrepancy"] >= 0.0
