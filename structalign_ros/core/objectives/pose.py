"""Supervised end-effector pose loss, added to any objective when the batch has ground truth."""

from __future__ import annotations

from torch import Tensor

from structalign_ros.core.rotations import geodesic_angle, quaternion_to_matrix, rotation_6d_to_matrix


def pose_loss(pred: Tensor, target: Tensor) -> tuple[Tensor, dict[str, float]]:
    """Position MSE plus the mean geodesic rotation error.

    Args:
        pred: ``(B, 9)`` head output ``[x, y, z, r6]``.
        target: ``(B, 7)`` ``[x, y, z, qx, qy, qz, qw]``.

    Returns:
        The loss (metres^2 + radians) and metrics ``pose_pos_mae`` (m) and ``pose_rot_deg``.
    """
    pos_err = pred[:, :3] - target[:, :3]
    angle = geodesic_angle(rotation_6d_to_matrix(pred[:, 3:]), quaternion_to_matrix(target[:, 3:]))
    loss = (pos_err * pos_err).sum(-1).mean() + angle.mean()
    pos_mae, rot_deg = pos_err.detach().abs().mean(), angle.detach().mean().rad2deg()
    return loss, {"pose_pos_mae": float(pos_mae), "pose_rot_deg": float(rot_deg)}
