"""The one interface every objective implements: embeddings, inputs/kernels, masks -> loss, metrics."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from structalign_ros.core.data.batch import Batch
from structalign_ros.core.learn.models import ModelOutput


class ObjectiveResult(NamedTuple):
    """A scalar loss to minimise and detached scalar metrics for logging."""

    loss: Tensor
    metrics: dict[str, float]


class Objective(nn.Module):
    """Base class: ``forward(out, batch, lambdas) -> ObjectiveResult``.

    ``out`` carries the embeddings ``(B, M, d)`` and the batch carries the raw inputs (for input
    kernels) and the ``(B, M)`` mask; every objective ignores masked entries. ``lambdas`` ``(M,)`` are
    the model's global modality weights, which structural objectives weight their terms by. An
    objective is an ``nn.Module`` so that methods with their own parameters (decoders) are trained by
    the same optimiser as the model.
    """

    def forward(self, out: ModelOutput, batch: Batch, lambdas: Tensor) -> ObjectiveResult:
        raise NotImplementedError


def masked_cross_entropy(logits: Tensor, valid_rows: Tensor, valid_cols: Tensor) -> tuple[Tensor, Tensor]:
    """Cross-entropy with the diagonal as target, over valid rows and among valid columns only.

    Args:
        logits: ``(..., B, B)``; valid_rows, valid_cols: ``(..., B)`` bool.

    Returns:
        ``(mean loss, top-1 accuracy)`` over all valid rows of all leading entries; zeros if none.
    """
    logits = logits.masked_fill(~valid_cols.unsqueeze(-2), float("-inf"))
    b = logits.shape[-1]
    target = torch.arange(b, device=logits.device).expand(logits.shape[:-1])
    flat_rows = valid_rows.reshape(-1)
    if not flat_rows.any():
        zero = logits.sum() * 0.0  # keeps the graph, so backward still runs
        return zero, zero.detach()
    rows = logits.reshape(-1, b)[flat_rows]
    tgt = target.reshape(-1)[flat_rows]
    loss = F.cross_entropy(rows, tgt)
    acc = (rows.argmax(-1) == tgt).float().mean()
    return loss, acc.detach()
