"""GRAM (Cicchetti et al., 2024): contrastive learning on the volume spanned by all modalities.

A window's modalities are aligned when their unit embeddings are nearly collinear, i.e. the
parallelotope they span has small volume (:func:`core.ot.volume.gram_volume`). GRAM contrasts an
anchor modality of window ``i`` against the other modalities of every window ``j``:
``logits_ij = -vol(z^a_i, {z^n_j}_{n != a}) / tau``, cross-entropy on ``i = j``, in both directions.
"""

from __future__ import annotations

import torch
from torch import Tensor

from structalign_ros.core.data.batch import Batch
from structalign_ros.core.learn.models import ModelOutput
from structalign_ros.core.learn.objectives.base import Objective, ObjectiveResult, masked_cross_entropy
from structalign_ros.core.ot.volume import gram_volume


def masked_vectors(z: Tensor, mask: Tensor) -> Tensor:
    """Lift ``(..., M, d)`` embeddings to ``d + M`` dims so a missing modality leaves the volume unchanged.

    A present modality keeps ``[z, 0]``; a missing modality ``m`` becomes the unit vector ``e_{d+m}``,
    orthogonal to every other row, so it multiplies the volume by exactly 1. This keeps one batched
    volume for windows with different sets of modalities.

    Args:
        z: ``(..., M, d)``; mask: ``(..., M)`` bool.

    Returns:
        ``(..., M, d + M)``.
    """
    m = z.shape[-2]
    eye = torch.eye(m, dtype=z.dtype, device=z.device).expand(*z.shape[:-2], m, m)
    present = mask.unsqueeze(-1)
    return torch.cat([z * present, eye * ~present], dim=-1)


def cross_volumes(lifted: Tensor, anchor: int) -> Tensor:
    """Volumes of every anchor-of-``i`` with the-other-modalities-of-``j`` group.

    Args:
        lifted: ``(B, M, D)`` from :func:`masked_vectors`; anchor: the anchor modality's index.

    Returns:
        ``(B_i, B_j)``; the diagonal holds each window's own group.
    """
    b, m, _ = lifted.shape
    groups = lifted.unsqueeze(0).expand(b, b, m, -1).clone()  # (B_i, B_j, M, D)
    groups[:, :, anchor] = lifted[:, anchor].unsqueeze(1)
    return gram_volume(groups)


class GRAM(Objective):
    """Volume contrastive loss with modality ``anchor`` (batch order) as the anchor.

    Windows without the anchor, or with nothing but the anchor, are not anchors; candidates ``j``
    keep their own mask, so a candidate missing a modality is scored on the ones it has.

    Args:
        temperature: softmax temperature on volumes (volumes lie in ``[0, 1]``).
        anchor: index of the anchor modality.
    """

    def __init__(self, *, temperature: float = 0.1, anchor: int = 0) -> None:
        super().__init__()
        self.temperature = temperature
        self.anchor = anchor

    def forward(self, out: ModelOutput, batch: Batch, lambdas: Tensor) -> ObjectiveResult:
        z, mask = out.embeddings, batch.mask  # (B, M, d), (B, M)
        a = self.anchor
        lifted = masked_vectors(z, mask)  # (B, M, d+M)
        vol = cross_volumes(lifted, a)  # (B_i, B_j)
        logits = -vol / self.temperature
        has_anchor = mask[:, a]
        has_other = mask.sum(1) - mask[:, a].long() > 0
        rows = has_anchor & has_other
        loss_a, acc_a = masked_cross_entropy(logits, rows, has_other)
        loss_b, acc_b = masked_cross_entropy(logits.T, rows, has_anchor)
        loss = 0.5 * (loss_a + loss_b)
        aligned = vol.diagonal()[rows].mean() if rows.any() else vol.new_zeros(())
        metrics = {"contrastive": float(loss.detach()), "top1": float(0.5 * (acc_a + acc_b))}
        metrics["volume_pos"] = float(aligned.detach())
        return ObjectiveResult(loss, metrics)
