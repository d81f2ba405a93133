"""Encoders, lambda fusion with masks, the pose head and its rotation representation."""

import pytest
import torch

from structalign_ros.core.config import ModelConfig
from structalign_ros.core.data.batch import ModalitySpec
from structalign_ros.core.eval.synthetic import SyntheticWorld
from structalign_ros.core.learn.models import MultimodalModel, masked_weights
from structalign_ros.core.learn.rotations import (
    matrix_to_rotation_6d,
    quaternion_to_matrix,
    rotation_6d_to_matrix,
)

TINY = ModelConfig(embed_dim=16, width=8, image_size=16)


@pytest.fixture(scope="module")
def world():
    return SyntheticWorld(image=16, steps=12)


@pytest.mark.parametrize("temporal", ["conv", "gru"])
def test_output_shapes_and_unit_embeddings(world, temporal):
    batch, _ = world.batch(10, seed=0, drop=0.3)
    model = MultimodalModel(ModalitySpec.from_batch(batch, world.kinds), ModelConfig(16, 8, 16, temporal))
    out = model(batch.inputs, batch.mask)
    assert out.embeddings.shape == (10, 6, 16) and out.fused.shape == (10, 16)
    assert out.weights.shape == (10, 6) and out.pose.shape == (10, 9)
    assert torch.allclose(out.embeddings.norm(dim=-1), torch.ones(10, 6), atol=1e-5)
    assert torch.allclose(out.fused.norm(dim=-1), torch.ones(10), atol=1e-5)


def test_masked_weights_renormalise_over_present_modalities():
    logits = torch.tensor([0.0, 1.0, 2.0])
    mask = torch.tensor([[True, True, True], [True, False, True], [False, False, False]])
    w = masked_weights(logits, mask)
    assert torch.allclose(w[0], torch.softmax(logits, 0))
    assert w[1, 1] == 0 and torch.isclose(w[1].sum(), torch.tensor(1.0))
    assert torch.isclose(w[1, 2] / w[1, 0], torch.exp(torch.tensor(2.0)))
    assert torch.equal(w[2], torch.zeros(3))


def test_a_masked_modality_does_not_reach_fusion_or_pose(world):
    batch, _ = world.batch(6, seed=1)
    batch.mask[:, 0] = False
    model = MultimodalModel(ModalitySpec.from_batch(batch, world.kinds), TINY).eval()
    a = model(batch.inputs, batch.mask)
    garbage = dict(batch.inputs)
    garbage["rgb"] = torch.randint(0, 255, batch.inputs["rgb"].shape, dtype=torch.uint8)
    b = model(garbage, batch.mask)
    assert not torch.allclose(a.embeddings[:, 0], b.embeddings[:, 0])
    assert torch.allclose(a.fused, b.fused) and torch.allclose(a.pose, b.pose)
    assert torch.equal(a.weights[:, 0], torch.zeros(6))


def test_input_statistics_are_fitted_on_present_samples(world):
    batch, _ = world.batch(32, seed=2, drop=0.5)
    model = MultimodalModel(ModalitySpec.from_batch(batch, world.kinds), TINY)
    model.fit_input_stats(batch)
    present = batch.inputs["wrench"][batch.mask[:, 3]]
    assert torch.allclose(model.encoders["wrench"].norm.loc, present.mean((0, 1)), atol=1e-5)


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError, match="no encoder"):
        MultimodalModel({"sonar": ModalitySpec("sonar", (4, 2))}, TINY)


def test_rotation_6d_round_trip_and_quaternions():
    q = torch.nn.functional.normalize(torch.randn(20, 4), dim=1)
    R = quaternion_to_matrix(q)
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3).expand(20, 3, 3), atol=1e-5)
    assert torch.allclose(torch.linalg.det(R), torch.ones(20), atol=1e-5)
    assert torch.allclose(rotation_6d_to_matrix(matrix_to_rotation_6d(R)), R, atol=1e-5)
    # any 6-vector (not just exact columns) maps to a proper rotation
    R2 = rotation_6d_to_matrix(torch.randn(20, 6))
    assert torch.allclose(torch.linalg.det(R2), torch.ones(20), atol=1e-5)
    # 90 degrees about z: x -> y
    qz = torch.tensor([0.0, 0.0, 2**-0.5, 2**-0.5])
    assert torch.allclose(
        quaternion_to_matrix(qz) @ torch.tensor([1.0, 0, 0]), torch.tensor([0.0, 1, 0]), atol=1e-6
    )


def test_a_masked_batch_zeroes_and_masks_only_what_it_drops():
    from structalign_ros.core.eval.synthetic import SyntheticWorld

    world = SyntheticWorld(modalities=("rgb", "wrench", "joints"), image=16, steps=6)
    batch, _ = world.batch(4, seed=3)
    keep = torch.ones(4, 3, dtype=torch.bool)
    keep[1, 0] = keep[2, 2] = False
    out = batch.masked(keep)
    assert torch.equal(out.mask, batch.mask & keep) and out.pose is batch.pose
    assert not out.inputs["rgb"][1].any() and not out.inputs["joints"][2].any()
    assert out.inputs["rgb"].dtype == batch.inputs["rgb"].dtype
    for m, name in enumerate(batch.modalities):
        rows = keep[:, m]
        assert torch.equal(out.inputs[name][rows], batch.inputs[name][rows])
