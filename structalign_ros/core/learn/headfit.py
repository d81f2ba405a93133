"""The last stage of the offline recipe: refit the pose experts on frozen features, then calibrate.

End-to-end training (:func:`train.train_step`) shapes the encoders with the contrastive objective,
the GW regulariser and the pose loss, but a step costs a pass through every encoder, so the pose
experts see only a few hundred steps. With the encoders frozen, every training window's expert
inputs are computed once (:func:`expert_cues`, clean and with each modality noised at its own std),
and the experts train for thousands of cheap steps on them (:func:`fit_experts`). Last,
:func:`calibrate` sets each expert's :attr:`models.PoseHead.calibration` from held-out windows: an
expert that fits the training episodes better than it generalises reports too small a variance, and
the fusion would trust it too much. An expert that explains too little of the held-out pose at all
(:func:`held_out_r2`) is gated out of the fusion: its confidence on windows of unseen episodes is not
to be trusted either.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from structalign_ros.core.data.batch import Batch, add_noise, channel_std
from structalign_ros.core.learn.baselines import ridge_solve
from structalign_ros.core.learn.models import MEAN_OUTPUTS, MultimodalModel, masked_weights
from structalign_ros.core.learn.objectives import pose_loss
from structalign_ros.core.learn.rotations import (
    quaternion_to_matrix,
    quaternion_to_rotation_6d,
    rotation_6d_to_matrix,
)

# Medians of chi-square variables with 1 and 6 degrees of freedom: a calibrated expert's normalised
# squared position residual per axis, and its rotation's chordal residual over 6 components.
_CHI2_MEDIAN_1, _CHI2_MEDIAN_6 = 0.4549, 5.3481
# The calibration of a gated expert (the clamp's upper end): its precision divided by 10^6, so it only
# decides the pose when no other expert is present.
GATED = 1e6


@dataclass
class Cues:
    """Expert inputs of labelled windows: ``clean[m]`` and ``noised[m]`` ``(N, D_m)``, ``mask`` ``(N, M)``,
    ``pose`` ``(N, 7)``."""

    clean: list[Tensor]
    noised: list[Tensor]
    mask: Tensor
    pose: Tensor

    def __len__(self) -> int:
        return len(self.pose)


@torch.no_grad()
def expert_cues(model: MultimodalModel, batches: Iterable[Batch], noise: bool = True) -> Cues:
    """Each expert's input for every labelled window of ``batches`` (frozen encoders, CPU tensors).

    With ``noise``, also each modality's input when that modality (alone) carries Gaussian noise at
    its own per-channel std, measured on the batch.
    """
    head = model.pose_head
    if head is None:
        raise ValueError("the model has no pose head")
    model.eval()
    device = next(model.parameters()).device
    clean: list[list[Tensor]] = [[] for _ in model.modalities]
    noised: list[list[Tensor]] = [[] for _ in model.modalities]
    masks, poses = [], []
    for batch in batches:
        if batch.pose is None:
            continue
        keep = batch.pose.isfinite().all(1)
        if keep.sum() < 1:
            continue
        batch = batch.select(keep.nonzero().squeeze(1)).to(device)
        features = model.features(batch.inputs)
        for m, cue in enumerate(head.expert_inputs([batch.inputs[n] for n in model.modalities], features)):
            clean[m].append(cue.cpu())
        if noise:
            for m, name in enumerate(model.modalities):
                present = batch.mask[:, m]
                x = batch.inputs[name]
                if present.sum() >= 2:
                    x = add_noise(model.specs[name].kind, x, channel_std(model.specs[name].kind, x[present]))
                noised[m].append(head.expert_input(m, x, model.encoders[name](x)).cpu())
        masks.append(batch.mask.cpu())
        poses.append(batch.pose.cpu().float())
    if not poses:
        raise ValueError("no labelled windows")
    cat = [torch.cat(c) for c in clean]
    return Cues(cat, [torch.cat(c) for c in noised] if noise else cat, torch.cat(masks), torch.cat(poses))


def fit_linear_parts(model: MultimodalModel, cues: Cues, ridge: float = 1e-4) -> None:
    """Each expert's linear part by ridge regression of the standardised position and the target's
    6D rotation on its standardised clean cues; the MLP's mean outputs are zeroed, so the expert
    starts from the ridge solution and the refit learns what is left."""
    head = model.pose_head
    device = next(model.parameters()).device
    y = torch.cat(
        [
            (cues.pose[:, :3] - head.position.loc.cpu()) / head.position.scale.cpu(),
            quaternion_to_rotation_6d(cues.pose[:, 3:]),
        ],
        1,
    )
    for m, expert in enumerate(head.experts):
        rows = cues.mask[:, m]
        if rows.sum() < 2:
            continue
        W = ridge_solve(head.inputs[m](cues.clean[m][rows].to(device)).cpu(), y[rows], ridge)  # (D + 1, 9)
        expert.linear.weight.copy_(W[:-1].T.float().to(device))
        expert.linear.bias.copy_(W[-1].float().to(device))
        last = expert.mlp[-1]
        last.weight[list(MEAN_OUTPUTS)] = 0.0
        last.bias[list(MEAN_OUTPUTS)] = 0.0


def fit_experts(
    model: MultimodalModel,
    cues: Cues,
    steps: int,
    lr: float,
    noise: float,
    seed: int = 0,
    batch_size: int = 256,
) -> float:
    """Train the pose experts (and only them) on ``cues``; returns the last step's loss.

    Each expert's input standardisation is refitted on the clean cues first (the frozen encoders'
    features have moved since it was fitted) and its linear part solved (:func:`fit_linear_parts`).
    Per window and modality, the noised cue replaces the clean one with probability ``noise`` (not
    for the kinematic experts). AdamW with a cosine decay to zero.
    """
    head = model.pose_head
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    with torch.no_grad():
        for m, norm in enumerate(head.inputs):
            if cues.mask[:, m].sum() >= 2:
                norm.fit(cues.clean[m][cues.mask[:, m]].to(device))
        fit_linear_parts(model, cues)
    params = [p for e in head.experts for p in e.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps))
    logits = model.modality_logits.detach()
    loc, scale = head.position.loc, head.position.scale
    kinematic = torch.tensor(head.kinematic)
    head.train()
    loss = torch.zeros(())
    for _ in range(steps):
        idx = torch.randint(0, len(cues), (min(batch_size, len(cues)),), generator=gen)
        # the kinematic experts keep their clean cues: their input alone cannot tell a noisy joint
        # reading from another pose, and learning to hedge on the noised copies biases every clean
        # prediction towards the mean (noise on the joints is the health monitor's to catch)
        swap = (torch.rand(len(idx), len(head.experts), generator=gen) < noise) & ~kinematic
        inputs = [
            torch.where(swap[:, m : m + 1], cues.noised[m][idx], cues.clean[m][idx]).to(device)
            for m in range(len(head.experts))
        ]
        mask, pose = cues.mask[idx].to(device), cues.pose[idx].to(device)
        experts = head.predict_experts(inputs)
        fused = head.fuse(experts, masked_weights(logits, mask))
        loss, _ = pose_loss(experts, fused, pose, mask, loc, scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    head.eval()
    return float(loss.detach())


@torch.no_grad()
def held_out_r2(model: MultimodalModel, cues: Cues) -> Tensor:
    """``(M, 2)`` each expert's coefficient of determination on ``cues``, for the position and for the
    rotation: one minus its squared error over the squared spread of the targets around their own
    mean, over the windows where the modality is present. Position in the head's standardised units;
    rotation as the first two columns of the matrix (the expert's orthonormalised), against their
    plain mean. NaN for an expert with fewer than 8 such windows."""
    head = model.pose_head
    device = next(model.parameters()).device
    experts = head.predict_experts([c.to(device) for c in cues.clean]).cpu()
    y = (cues.pose[:, :3] - head.position.loc.cpu()) / head.position.scale.cpu()
    cols = quaternion_to_matrix(cues.pose[:, 3:])[..., :2].flatten(1)  # (N, 6)
    r2 = torch.full((experts.shape[1], 2), float("nan"))
    for m in range(experts.shape[1]):
        present = cues.mask[:, m]
        if present.sum() < 8:
            continue
        own = rotation_6d_to_matrix(experts[present, m, 6:12])[..., :2].flatten(1)
        for k, (pred, target) in enumerate(((experts[present, m, :3], y[present]), (own, cols[present]))):
            sse = ((pred - target) ** 2).sum()
            r2[m, k] = 1 - sse / ((target - target.mean(0)) ** 2).sum().clamp_min(1e-12)
    return r2


@torch.no_grad()
def calibrate(model: MultimodalModel, cues: Cues, min_r2: float = float("-inf")) -> Tensor:
    """Set :attr:`PoseHead.calibration` from held-out ``cues``; returns it ``(M, 2)``.

    Per expert, the median over windows of its squared residual divided by its predicted variance,
    over the median a calibrated expert would show (chi-square), for position and rotation. Medians:
    a few wild windows must not decide how much a sensor is trusted. Experts with fewer than 8
    held-out windows keep their value.

    An expert whose position (rotation) :func:`held_out_r2` is below ``min_r2`` gets :data:`GATED` for
    its position (rotation); the expert with the highest R^2 never does. A median calibration cannot
    see that an expert which barely beats the mean on held-out episodes still claims a small variance
    on some windows of the next one, and in a precision-weighted mean those windows pull the pose
    wherever the expert says. Position and rotation are judged apart: on arm6 the camera's rotation
    is poor (R^2 below the wrench's and IMU's) while its position is good. A gated part stays in the
    fusion as the last resort, when every passing expert is missing.
    """
    head = model.pose_head
    device = next(model.parameters()).device
    experts = head.predict_experts([c.to(device) for c in cues.clean]).cpu()
    y = ((cues.pose[:, :3] - head.position.loc.cpu()) / head.position.scale.cpu()).unsqueeze(1)
    z_pos = ((experts[..., :3] - y) ** 2 * torch.exp(-experts[..., 3:6])).median(-1).values  # (N, M)
    R = quaternion_to_matrix(cues.pose[:, 3:]).unsqueeze(1)
    chord2 = ((rotation_6d_to_matrix(experts[..., 6:12])[..., :2] - R[..., :2]) ** 2).sum((-2, -1))
    z_rot = chord2 * torch.exp(-experts[..., 12])
    cal = head.calibration.clone()
    for m in range(cal.shape[0]):
        present = cues.mask[:, m]
        if present.sum() >= 8:
            cal[m, 0] = z_pos[present, m].median() / _CHI2_MEDIAN_1
            cal[m, 1] = z_rot[present, m].median() / _CHI2_MEDIAN_6
    cal = cal.clamp(1e-3, GATED)
    r2 = held_out_r2(model, cues)
    for k in range(2):  # position, rotation
        if r2[:, k].isfinite().any():
            best = int(torch.where(r2[:, k].isnan(), float("-inf"), r2[:, k]).argmax())
            for m in range(cal.shape[0]):
                if m != best and bool(r2[m, k] < min_r2):  # NaN (too few windows) compares False: kept
                    cal[m, k] = GATED
    head.calibration.copy_(cal.to(head.calibration.device))
    return head.calibration.cpu()
