"""Downstream probes on frozen embeddings: EE position error (ridge) and contact accuracy."""

from __future__ import annotations

import torch

from structalign_ros.core.data.batch import Batch
from structalign_ros.core.eval.metrics import linear_probe_accuracy
from structalign_ros.core.learn.models import MultimodalModel

from .data import Split


@torch.no_grad()
def embed(model: MultimodalModel, batch: Batch, chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """``(fused (N, d), embeddings (N, M, d))`` of a batch, in eval mode."""
    fused, per = [], []
    for i in range(0, len(batch), chunk):
        b = batch.select(torch.arange(i, min(i + chunk, len(batch))))
        out = model(b.inputs, b.mask)
        fused.append(out.fused)
        per.append(out.embeddings)
    return torch.cat(fused), torch.cat(per)


def ridge_predict(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, ridge: float = 1e-2):
    """Closed-form ridge regression (with bias) fit on ``train``, predictions for ``test_x``."""

    def design(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.double(), torch.ones(x.shape[0], 1, dtype=torch.float64)], 1)

    X = design(train_x)
    W = torch.linalg.solve(X.T @ X + ridge * torch.eye(X.shape[1], dtype=X.dtype), X.T @ train_y.double())
    return design(test_x) @ W


def ee_error_mm(train_x, train_pos, test_x, test_pos) -> float:
    """Mean Euclidean end-effector position error of a ridge probe, in mm."""
    pred = ridge_predict(train_x, train_pos, test_x)
    return float((pred - test_pos.double()).norm(dim=1).mean() * 1000.0)


def downstream(model: MultimodalModel, train: Split, test: Split) -> dict[str, float]:
    """EE error (mm) and contact accuracy of probes on the fused embedding."""
    ftr, _ = embed(model, train.batch)
    fte, _ = embed(model, test.batch)
    return {
        "ee_mm": ee_error_mm(ftr, train.position, fte, test.position),
        "contact_acc": linear_probe_accuracy(ftr, train.contact, fte, test.contact),
    }
