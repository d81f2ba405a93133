"""Pairwise InfoNCE over all modality pairs: Contrastive Multiview Coding (Tian et al., ECCV 2020)."""

from __future__ import annotations

import torch
from torch import Tensor

from structalign_ros.core.data.batch import Batch
from structalign_ros.core.learn.models import ModelOutput
from structalign_ros.core.learn.objectives.base import Objective, ObjectiveResult, masked_cross_entropy


class PairwiseInfoNCE(Objective):
    """``L = mean over pairs (m < n) of the symmetric InfoNCE between z^m and z^n``.

    For a pair, only windows with both modalities present take part, as anchors and as negatives.

    Args:
        temperature: softmax temperature on cosine similarities.
    """

    def __init__(self, *, temperature: float = 0.1) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, out: ModelOutput, batch: Batch, lambdas: Tensor) -> ObjectiveResult:
        z, mask = out.embeddings, batch.mask  # (B, M, d), (B, M)
        m = z.shape[1]
        first, second = torch.triu_indices(m, m, offset=1, device=z.device)  # (P,) each
        za, zb = z[:, first].transpose(0, 1), z[:, second].transpose(0, 1)  # (P, B, d)
        logits = za @ zb.transpose(1, 2) / self.temperature  # (P, B, B)
        both = (mask[:, first] & mask[:, second]).T  # (P, B)
        loss_ab, acc_ab = masked_cross_entropy(logits, both, both)
        loss_ba, acc_ba = masked_cross_entropy(logits.transpose(1, 2), both, both)
        loss = 0.5 * (loss_ab + loss_ba)
        return ObjectiveResult(
            loss, {"contrastive": float(loss.detach()), "top1": float(0.5 * (acc_ab + acc_ba))}
        )
