"""Symile (Saporta et al., NeurIPS 2024): contrastive learning with the multilinear inner product.

Symile scores a tuple of M embeddings by ``MIP(z^1, ..., z^M) = sum_k prod_m z^m_k``, which captures
higher-order dependence that pairwise dot products miss; with two modalities it is the dot product.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from structalign_ros.core.data.batch import Batch
from structalign_ros.core.learn.models import ModelOutput
from structalign_ros.core.learn.objectives.base import Objective, ObjectiveResult, masked_cross_entropy


def multilinear_inner_product(*vectors: Tensor) -> Tensor:
    """``sum_k prod_m v^m_k``: ``(..., d)`` each -> ``(...)``."""
    return torch.stack(torch.broadcast_tensors(*vectors)).prod(0).sum(-1)


class Symile(Objective):
    """For each target modality ``m``: ``logits_ij = MIP(z^m_j, {z^n_i}_{n != m}) / tau``, CE on ``i = j``.

    A missing modality enters the product as the all-ones vector (the identity of the elementwise
    product), so it drops out of the score. Unit vectors make a k-way MIP of aligned inputs scale as
    ``d^(1 - k/2)``; scores are multiplied by ``d^(k/2 - 1)`` (``k`` present modalities of the anchor
    window) so one temperature fits windows with any number of modalities, and k = 2 stays the plain
    dot product.

    Args:
        temperature: softmax temperature.
    """

    def __init__(self, *, temperature: float = 0.1) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, out: ModelOutput, batch: Batch, lambdas: Tensor) -> ObjectiveResult:
        z, mask = out.embeddings, batch.mask  # (B, M, d), (B, M)
        d = z.shape[-1]
        filled = torch.where(mask.unsqueeze(-1), z, torch.ones_like(z))  # (B, M, d)
        # product of all modalities except m, for each m, without dividing (z may contain zeros)
        left = torch.cumprod(torch.cat([torch.ones_like(filled[:, :1]), filled[:, :-1]], 1), 1)
        right = torch.cumprod(torch.cat([filled[:, 1:], torch.ones_like(filled[:, :1])], 1).flip(1), 1).flip(
            1
        )
        others = left * right  # (B, M, d)
        k = mask.sum(1).to(z.dtype)  # (B,)
        scale = torch.exp((k / 2 - 1) * math.log(d)) / self.temperature  # (B,)
        logits = torch.einsum("imd,jmd->mij", others, z) * scale[None, :, None]  # (M, B, B)
        rows = (mask & (k >= 2).unsqueeze(1)).T  # (M, B): target present and something to pair it with
        loss, acc = masked_cross_entropy(logits, rows, mask.T)
        return ObjectiveResult(loss, {"contrastive": float(loss.detach()), "top1": float(acc)})
