"""Shared fixtures for the OT tests: small structured kernels and seeded random GW instances."""

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


def structure(n: int, g: torch.Generator, kind: str) -> torch.Tensor:
    """An (n, n) RBF kernel or max-normalised distance matrix of n random points in 2-4 dims."""
    dim = int(torch.randint(2, 5, (), generator=g))
    X = torch.randn(n, dim, dtype=torch.float64, generator=g)
    if kind == "kernel":
        return rbf(X)
    D = torch.cdist(X, X)
    return D / D.max()


def weights(n: int, g: torch.Generator, zeros: int = 0) -> torch.Tensor:
    """Non-uniform (n,) histogram of mass 1 with ``zeros`` zero entries at random places."""
    w = torch.rand(n, dtype=torch.float64, generator=g) + 0.2
    w[torch.randperm(n, generator=g)[:zeros]] = 0.0
    return w / w.sum()


def random_gw(seed: int, n_max: int = 24) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unpaired GW instance: sizes n != m in [6, n_max], kernels or distances, non-uniform weights."""
    g = torch.Generator().manual_seed(seed)
    n, m = (int(x) for x in torch.randint(6, n_max + 1, (2,), generator=g))
    kind = "kernel" if seed % 2 == 0 else "distance"
    return structure(n, g, kind), structure(m, g, kind), weights(n, g), weights(m, g)
