"""Baselines, sensor conditions and the product-of-experts pose head with its refit and calibration."""

from __future__ import annotations

import math

import pytest
import torch

from structalign_ros.core.config import ModelConfig
from structalign_ros.core.data.batch import Batch, ModalitySpec, concat
from structalign_ros.core.eval.evaluation import pose_errors
from structalign_ros.core.eval.quality import (
    apply_condition,
    conditions,
    leave_one_episode_out,
    quality_report,
)
from structalign_ros.core.learn import headfit
from structalign_ros.core.learn.baselines import fit_baselines, fit_ridge, pose_targets
from structalign_ros.core.learn.headfit import (
    GATED,
    calibrate,
    expert_cues,
    fit_experts,
    fit_linear_parts,
    held_out_r2,
)
from structalign_ros.core.learn.models import (
    MultimodalModel,
    kinematic_features,
    kinematic_size,
    masked_weights,
)
from structalign_ros.core.learn.rotations import matrix_to_quaternion

KINDS = {"rgb": "image", "imu": "imu", "joints": "joints"}
LINKS = (0.4, 0.3, 0.2)


def planar_arm(n: int, seed: int, links: tuple[float, ...] = LINKS) -> Batch:
    """Windows of a planar arm: joints ``(n, 4, 3, J)`` whose last positions set the EE pose by
    forward kinematics, a camera of noise and an IMU of noise; EE yaw as the orientation."""
    gen = torch.Generator().manual_seed(seed)
    J = len(links)
    q = (torch.rand(n, J, generator=gen) - 0.5) * 2.5
    angles = q.cumsum(1)
    x = sum(length * angles[:, i].cos() for i, length in enumerate(links))
    y = sum(length * angles[:, i].sin() for i, length in enumerate(links))
    yaw = angles[:, -1]
    c, s, zero, one = yaw.cos(), yaw.sin(), torch.zeros(n), torch.ones(n)
    R = torch.stack([c, -s, zero, s, c, zero, zero, zero, one], 1).reshape(n, 3, 3)
    pose = torch.cat([torch.stack([x, y, zero], 1), matrix_to_quaternion(R)], 1)
    joints = torch.zeros(n, 4, 3, J)
    joints[:, :, 0, :] = q[:, None, :] + 0.01 * torch.randn(n, 4, J, generator=gen)
    joints[:, -1, 0, :] = q
    inputs = {
        "rgb": torch.randint(0, 255, (n, 1, 16, 16, 3), generator=gen, dtype=torch.uint8),
        "imu": torch.randn(n, 8, 6, generator=gen),
        "joints": joints,
    }
    return Batch(inputs, torch.ones(n, 3, dtype=torch.bool), tuple(KINDS), torch.arange(n), pose)


def test_kinematic_features_make_forward_kinematics_linear():
    # a 2-link arm's position is linear in the sin/cos of its angles and their pairwise products
    train, test = planar_arm(400, 0, links=(0.4, 0.3)), planar_arm(100, 1, links=(0.4, 0.3))
    feats = kinematic_features(train.inputs["joints"])
    assert feats.shape == (400, kinematic_size(2)) == (400, 14)
    ridge = fit_ridge(feats, pose_targets(train.pose)[:, :2], ridge=1e-12)
    err = (ridge(kinematic_features(test.inputs["joints"])) - test.pose[:, :2]).norm(dim=1)
    assert float(err.max()) < 1e-4
    # the features read the last sample's positions only
    moved = train.inputs["joints"].clone()
    moved[:, :-1] += 1.0
    moved[:, -1, 1:] += 1.0
    assert torch.equal(kinematic_features(moved), feats)


def test_baselines_beat_the_mean_and_the_joint_ones_need_joints():
    train, test = planar_arm(600, 0), planar_arm(200, 1)
    baselines = fit_baselines(train, KINDS, steps=400)
    assert set(baselines) == {"mean", "ridge_joints", "mlp_joints", "mlp_raw", "mlp_raw_nojoints"}
    mm = {n: pose_errors(f(test), test.pose)["position_mm_mean"] for n, f in baselines.items()}
    assert mm["ridge_joints"] < 0.2 * mm["mean"] and mm["mlp_joints"] < 0.5 * mm["mean"]
    assert mm["mlp_raw_nojoints"] > 0.5 * mm["mean"]  # noise sensors carry no pose
    no_joints = {"rgb": "image", "imu": "imu"}
    sub = Batch({k: train.inputs[k] for k in no_joints}, train.mask[:, :2], tuple(no_joints), pose=train.pose)
    assert set(fit_baselines(sub, no_joints, steps=10)) == {"mean", "mlp_raw"}


def test_conditions_mask_or_noise_one_modality_and_leave_the_rest():
    batch = planar_arm(50, 0)
    assert conditions(batch.modalities) == ["all", "-rgb", "~rgb", "-imu", "~imu", "-joints", "~joints"]
    masked = apply_condition(batch, "-imu", KINDS)
    assert not masked.mask[:, 1].any() and masked.mask[:, [0, 2]].all()
    assert not masked.inputs["imu"].any() and torch.equal(masked.inputs["rgb"], batch.inputs["rgb"])
    noised = apply_condition(batch, "~joints", KINDS)
    assert noised.mask.all() and torch.equal(noised.inputs["imu"], batch.inputs["imu"])
    diff = noised.inputs["joints"] - batch.inputs["joints"]
    own = batch.inputs["joints"].std(dim=(0, 1))
    assert torch.allclose(diff.std(dim=(0, 1)), own, rtol=0.3)  # noise at the modality's own std
    assert torch.equal(apply_condition(batch, "~joints", KINDS).inputs["joints"], noised.inputs["joints"])


def test_quality_report_leaves_joint_baselines_out_without_joints():
    episodes = [planar_arm(150, s) for s in range(3)]
    baselines = leave_one_episode_out(episodes, KINDS, lambda b: fit_baselines(b, KINDS, steps=100))
    test = concat(episodes)
    ridge = baselines["ridge_joints"]
    report = quality_report(ridge, test, baselines, KINDS, only=["all", "-joints", "~imu"])
    assert report["all"]["ratio"] == pytest.approx(1.0) and report["all"]["best_baseline"] == "ridge_joints"
    assert "ridge_joints" not in report["-joints"]["baselines"]
    assert report["-joints"]["model_mm"] > 5 * report["all"]["model_mm"]  # the ridge reading zeros
    with pytest.raises(ValueError, match="at least two episodes"):
        leave_one_episode_out(episodes[:1], KINDS, lambda b: fit_baselines(b, KINDS))
    with pytest.raises(ValueError, match="windows the baselines were fitted around"):
        ridge(episodes[0])


def tiny_model(batch: Batch) -> MultimodalModel:
    torch.manual_seed(0)
    cfg = ModelConfig(embed_dim=8, width=4, image_size=16, pose_hidden=32)
    model = MultimodalModel(ModalitySpec.from_batch(batch, KINDS), cfg)
    model.fit_input_stats(batch)
    return model.eval()


def test_fusion_is_precision_and_lambda_weighted_and_drops_missing_experts():
    batch = planar_arm(4, 0)
    head = tiny_model(batch).pose_head
    experts = torch.zeros(4, 3, 13)
    experts[:, 0, :3], experts[:, 1, :3], experts[:, 2, :3] = 1.0, 2.0, 7.0
    experts[:, 0, 3:6], experts[:, 1, 3:6] = math.log(1.0), math.log(3.0)  # precisions 1 and 1/3
    experts[:, :, 6], experts[:, :, 10] = 1.0, 1.0  # identity rotations
    mask = torch.tensor([[True, True, False]] * 4)
    uniform = masked_weights(torch.zeros(3), mask)
    pos = head.fuse(experts, uniform)[:, :3]
    standardised = (pos - head.position.loc) / head.position.scale
    assert torch.allclose(standardised, torch.full((4, 3), (1.0 + 2.0 / 3) / (1 + 1 / 3)), atol=1e-5)
    # lambda doubles as trust: the first modality at 3x the weight of the second
    tilted = masked_weights(torch.tensor([math.log(3.0), 0.0, 0.0]), mask)
    pos = (head.fuse(experts, tilted)[:, :3] - head.position.loc) / head.position.scale
    assert torch.allclose(pos, torch.full((4, 3), (3.0 + 2.0 / 3) / (3 + 1 / 3)), atol=1e-5)
    # calibration divides the precision: an expert found 3x overconfident counts as its variance x3
    head.calibration[0, 0] = 3.0
    pos = (head.fuse(experts, uniform)[:, :3] - head.position.loc) / head.position.scale
    assert torch.allclose(pos, torch.full((4, 3), 1.5), atol=1e-5)


def test_refit_learns_the_pose_and_calibration_discounts_the_overconfident():
    train, held_out = planar_arm(800, 0), planar_arm(300, 1)
    model = tiny_model(train)
    chunks = [train.select(torch.arange(i, i + 100)) for i in range(0, 800, 100)]
    cues = expert_cues(model, chunks)
    assert len(cues) == 800 and [c.shape[1] for c in cues.clean] == [8, 8, kinematic_size(3)]
    assert not torch.equal(cues.noised[2], cues.clean[2])  # the joints' cue under noise

    def error(mask: torch.Tensor | None = None) -> float:
        with torch.no_grad():
            out = model(held_out.inputs, held_out.mask if mask is None else mask)
        return pose_errors(out.pose, held_out.pose)["position_mm_mean"]

    before = error()
    fit_experts(model, cues, steps=600, lr=3e-3, noise=0.0)
    assert error() < 0.3 * before
    # the joints' expert starts from the closed-form ridge solution on its kinematic features
    ridge = model.pose_head.experts[2].linear
    assert ridge.weight.abs().sum() > 0
    # the camera expert made overconfident: the training mean, claimed to within e^-3 of a unit
    expert = model.pose_head.experts[0]
    last = expert.mlp[-1]
    with torch.no_grad():
        expert.linear.weight.zero_()
        expert.linear.bias.zero_()
        last.weight.zero_()
        last.bias.zero_()
        last.bias[3:6] = -6.0
        last.bias[6], last.bias[10], last.bias[12] = 1.0, 1.0, -6.0
    only_joints = torch.zeros_like(held_out.mask)
    only_joints[:, 2] = True
    uncalibrated, joints_alone = error(), error(only_joints)
    assert uncalibrated > 3 * joints_alone
    cal = calibrate(model, expert_cues(model, [held_out], noise=False))
    assert cal[0, 0] > 100 * cal[2, 0] and cal[0, 1] > 100 * cal[2, 1]
    assert error() < min(1.5 * joints_alone, 0.25 * uncalibrated)


def test_experts_that_explain_little_of_the_held_out_pose_are_gated_but_stay_the_last_resort():
    train, held_out = planar_arm(800, 0), planar_arm(300, 1)
    model = tiny_model(train)
    fit_experts(model, expert_cues(model, [train]), steps=600, lr=3e-3, noise=0.0)
    cues = expert_cues(model, [held_out], noise=False)
    r2 = held_out_r2(model, cues)
    # the camera and IMU see noise: on unseen windows they explain nothing; the joints nearly all
    assert r2.shape == (3, 2) and (r2[2] > 0.9).all() and (r2[:2] < 0.5).all()
    ungated = calibrate(model, cues).clone()
    assert (ungated < GATED).all()
    cal = calibrate(model, cues, min_r2=0.5)
    assert torch.equal(cal[:2], torch.full((2, 2), GATED)) and torch.equal(cal[2], ungated[2])
    # the best expert is never gated, even when none reaches the bar
    cal = calibrate(model, cues, min_r2=0.999)
    assert torch.equal(cal[2], ungated[2]) and (cal[:2] == GATED).all()
    # position and rotation are judged apart
    fixed = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.99, 0.3]])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(headfit, "held_out_r2", lambda *_: fixed)
        cal = calibrate(model, cues, min_r2=0.5)
    gated = (cal == GATED).tolist()
    assert gated == [[False, True], [True, False], [False, True]]  # the IMU's rotation is the best
    # a gated expert still gives the pose when it is the only one present (its exact mean)
    only_imu = torch.zeros_like(held_out.mask)
    only_imu[:, 1] = True
    with torch.no_grad():
        out = model(held_out.inputs, only_imu)
    head = model.pose_head
    own = out.pose_experts[:, 1, :3] * head.position.scale + head.position.loc
    assert torch.allclose(out.pose[:, :3], own, atol=1e-5)
    # too few held-out windows: NaN, and nothing is gated on it
    few = expert_cues(model, [held_out.select(torch.arange(5))], noise=False)
    assert held_out_r2(model, few).isnan().all()


def test_calibration_needs_enough_held_out_windows():
    batch = planar_arm(5, 0)
    model = tiny_model(batch)
    cues = expert_cues(model, [batch], noise=False)
    assert len(cues) < 8 and torch.equal(calibrate(model, cues), torch.ones(3, 2))


def test_linear_parts_start_the_joint_expert_at_the_ridge_solution():
    train = planar_arm(400, 0, links=(0.4, 0.3))
    model = tiny_model(train)
    only_joints = torch.zeros_like(train.mask)
    only_joints[:, 2] = True
    with torch.no_grad():
        before = pose_errors(model(train.inputs, only_joints).pose, train.pose)["position_mm_mean"]
        fit_linear_parts(model, expert_cues(model, [train], noise=False), ridge=1e-10)
        after = pose_errors(model(train.inputs, only_joints).pose, train.pose)
    # a 2-link arm is linear in the kinematic features, and the MLP's mean outputs start at zero
    assert before > 10 and after["position_mm_mean"] < 0.1 and after["orientation_deg_mean"] < 0.1
