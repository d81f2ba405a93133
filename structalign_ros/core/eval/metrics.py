"""Evaluation metrics of embeddings and heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def linear_probe_accuracy(
    train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, ridge: float = 1e-2
) -> float:
    """Accuracy of a ridge-regression classifier (one-hot targets) fit on frozen features.

    Closed form rather than an iterative classifier: the probe must measure the features, not how
    well an optimiser was tuned.

    Args:
        train_x: ``(N, D)``; train_y: ``(N,)`` int labels; test_x: ``(K, D)``; test_y: ``(K,)``.
    """
    classes = int(max(train_y.max(), test_y.max())) + 1

    def design(x: Tensor) -> Tensor:
        return torch.cat([x.double(), torch.ones(x.shape[0], 1, dtype=torch.float64)], dim=1)

    X = design(train_x)
    Y = F.one_hot(train_y, classes).double()
    W = torch.linalg.solve(X.T @ X + ridge * torch.eye(X.shape[1], dtype=X.dtype), X.T @ Y)
    pred = (design(test_x) @ W).argmax(1)
    return float((pred == test_y).double().mean())


def recall_at_k(query: Tensor, gallery: Tensor, k: int = 1) -> float:
    """Cross-modal retrieval: share of queries whose paired gallery item (same row) is in the top ``k``.

    Args:
        query, gallery: ``(N, D)`` embeddings, row ``i`` of each from the same window.
    """
    sims = F.normalize(query, dim=-1) @ F.normalize(gallery, dim=-1).T  # (N, N)
    topk = sims.topk(k, dim=1).indices
    return float((topk == torch.arange(len(query)).unsqueeze(1)).any(1).double().mean())


def neighbourhood_preservation(z1: Tensor, z2: Tensor, k: int = 5) -> float:
    """GOTMA's L_NP: mean share of each point's k nearest neighbours that it keeps across two views.

    Args:
        z1, z2: ``(N, D1)``, ``(N, D2)``, row ``i`` of each from the same window; ``k < N``.

    Returns:
        In ``[0, 1]``; 1 when both views have the same neighbourhoods.
    """

    def neighbours(z: Tensor) -> Tensor:
        d = torch.cdist(z.double(), z.double())
        d.fill_diagonal_(float("inf"))
        return F.one_hot(d.topk(k, largest=False).indices, len(z)).sum(1).bool()  # (N, N)

    return float((neighbours(z1) & neighbours(z2)).sum(1).double().mean() / k)


def gw_manifold_discrepancy(z1: Tensor, z2: Tensor, k: int = 5, epsilon: float = 0.05) -> float:
    """GOTMA's manifold discrepancy: GW between the kNN-geodesic distance matrices of two views.

    Unlike :func:`neighbourhood_preservation` it needs no pairing between the rows of the views;
    the solve starts from the product coupling for that reason.

    Args:
        z1, z2: ``(N1, D1)``, ``(N2, D2)`` embeddings.
    """
    from structalign_ros.core.learn.kernels import knn_geodesic_distances
    from structalign_ros.core.ot import gromov_wasserstein2

    with torch.no_grad():
        d1, d2 = knn_geodesic_distances(z1.double(), k), knn_geodesic_distances(z2.double(), k)
        return float(gromov_wasserstein2(d1, d2, T0="product", epsilon=epsilon))
