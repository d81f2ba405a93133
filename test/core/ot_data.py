"""Shared fixtures for the OT tests: small structured kernels of paired samples."""

import torch


def rbf(X: torch.Tensor) -> torch.Tensor:
    D = torch.cdist(X, X).square()
    return torch.exp(-D / D.median().clamp_min(1e-12))


def paired_kernels(n: int, M: int, seed: int = 0, noise: float = 0.1) -> torch.Tensor:
    """(M, n, n) float64 RBF kernels of M nonlinear views of the same n latent points."""
    g = torch.Generator().manual_seed(seed)
    Z = torch.randn(n, 3, dtype=torch.float64, generator=g)
    views = []
    for _ in range(M):
        W = torch.randn(3, 6, dtype=torch.float64, generator=g)
        views.append(torch.tanh(Z @ W) + noise * torch.randn(n, 6, dtype=torch.float64, generator=g))
    return torch.stack([rbf(v) for v in views])
