"""Rotation representations of the end-effector pose head.

The head regresses the continuous 6D representation (the first two columns of the rotation matrix,
Zhou et al., CVPR 2019): unlike quaternions or Euler angles it has no discontinuity a network must
learn around. Ground truth arrives as quaternions ``[qx, qy, qz, qw]`` (the ROS order).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def rotation_6d_to_matrix(r6: Tensor) -> Tensor:
    """Gram-Schmidt of two 3-vectors into a rotation matrix.

    Args:
        r6: ``(..., 6)``, the (unnormalised) first and second columns.

    Returns:
        ``(..., 3, 3)`` rotation matrices with columns ``b1, b2, b1 x b2``.
    """
    a1, a2 = r6[..., :3], r6[..., 3:]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def matrix_to_rotation_6d(R: Tensor) -> Tensor:
    """The first two columns of ``R``: ``(..., 3, 3)`` -> ``(..., 6)``."""
    return torch.cat([R[..., :, 0], R[..., :, 1]], dim=-1)


def quaternion_to_rotation_6d(q: Tensor) -> Tensor:
    """``(..., 4)`` quaternions ``[x, y, z, w]`` -> ``(..., 6)`` their 6D representation."""
    return matrix_to_rotation_6d(quaternion_to_matrix(q))


def quaternion_to_matrix(q: Tensor) -> Tensor:
    """``(..., 4)`` quaternions ``[x, y, z, w]`` (any norm) -> ``(..., 3, 3)`` rotation matrices."""
    x, y, z, w = F.normalize(q, dim=-1).unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
    ]  # fmt: skip
    return torch.stack(rows, dim=-1).reshape(*q.shape[:-1], 3, 3)


def geodesic_angle(R1: Tensor, R2: Tensor) -> Tensor:
    """Rotation angle of ``R1^T R2`` in radians: ``(..., 3, 3)`` twice -> ``(...)``."""
    trace = (R1 * R2).sum((-2, -1))
    # clamp inside (-1, 1): acos has an infinite gradient at the ends
    return torch.acos(((trace - 1) / 2).clamp(-1 + 1e-6, 1 - 1e-6))


def matrix_to_quaternion(R: Tensor) -> Tensor:
    """``(..., 3, 3)`` rotation matrices -> unit quaternions ``[x, y, z, w]`` with ``w >= 0``.

    Each component is recovered from the diagonal as a square root and its sign from the
    off-diagonal differences, so no branch picks a pivot and nothing divides by a small number.
    """
    m = R.unbind(-1)  # columns
    r00, r11, r22 = m[0][..., 0], m[1][..., 1], m[2][..., 2]
    w = (1 + r00 + r11 + r22).clamp_min(0).sqrt() / 2
    x = (1 + r00 - r11 - r22).clamp_min(0).sqrt() / 2
    y = (1 - r00 + r11 - r22).clamp_min(0).sqrt() / 2
    z = (1 - r00 - r11 + r22).clamp_min(0).sqrt() / 2
    x = x.copysign(m[1][..., 2] - m[2][..., 1])  # R[2,1] - R[1,2]
    y = y.copysign(m[2][..., 0] - m[0][..., 2])  # R[0,2] - R[2,0]
    z = z.copysign(m[0][..., 1] - m[1][..., 0])  # R[1,0] - R[0,1]
    return F.normalize(torch.stack([x, y, z, w], dim=-1), dim=-1)
