r"""Fused Gromov–Wasserstein: features and structure in one coupling.

.. math::
    \mathrm{FGW}_\alpha = \min_{\mathbf{T} \in \Pi(\mathbf{p}, \mathbf{q})}
        (1 - \alpha) \langle \mathbf{M}, \mathbf{T} \rangle
        + \alpha \sum_{i,j,k,l} (\mathbf{C_1}_{i,k} - \mathbf{C_2}_{j,l})^2 \mathbf{T}_{i,j} \mathbf{T}_{k,l}

``alpha`` weighs structure: ``alpha=0`` is exact OT on the feature cost ``M``, ``alpha=1`` is GW (the
same convention as POT). Solved by the mirror-descent solver of :mod:`._solver`; the value is
differentiable w.r.t. ``M``, ``C1`` and ``C2`` with the plan held fixed.

Reference: Vayer et al. (2019), Optimal transport for structured data with application on graphs.
"""

from __future__ import annotations

import torch

from ._base import check_number, cost_matrix, detach, plan_like
from ._solver import SolverOptions
from .gw import Pair, gw_value, prepare_pair, solve_pair


def fgw_value(
    M: torch.Tensor, C1: torch.Tensor, C2: torch.Tensor, T: torch.Tensor, alpha: float
) -> torch.Tensor:
    """FGW objective at a given (B, n, m) plan, (B,); differentiable in all inputs."""
    return (1.0 - alpha) * (M * T).sum((-2, -1)) + alpha * gw_value(C1, C2, T)


def fused_gromov_wasserstein(
    M: torch.Tensor,
    C1: torch.Tensor,
    C2: torch.Tensor,
    p: torch.Tensor | None = None,
    q: torch.Tensor | None = None,
    *,
    alpha: float = 0.5,
    epsilon: float = 0.1,
    solver: str = "proximal",
    T0: torch.Tensor | str | None = None,
    max_iter: int = 100,
    tol: float = 1e-7,
    inner_max_iter: int = 200,
) -> torch.Tensor:
    """FGW coupling.

    Args (those after ``q`` by keyword only):
        M: (B, n, m) or (n, m) feature cost.
        C1, C2, p, q, epsilon, solver, T0, max_iter, tol, inner_max_iter: as in
            :func:`structalign_ros.core.ot.gromov_wasserstein`.
        alpha: structure weight in [0, 1].

    Returns:
        (B, n, m) or (n, m) plan in the dtype of ``C1``.
    """
    options = SolverOptions(
        epsilon=epsilon, solver=solver, max_iter=max_iter, tol=tol, inner_max_iter=inner_max_iter
    )
    pair, Mb = _prepare(detach(M), detach(C1), detach(C2), p=p, q=q, alpha=alpha)
    T = solve_pair(pair, T0=T0, options=options, M=Mb, alpha=alpha).to(pair.dtype)
    return T[0] if pair.squeeze else T


def fused_gromov_wasserstein2(
    M: torch.Tensor,
    C1: torch.Tensor,
    C2: torch.Tensor,
    p: torch.Tensor | None = None,
    q: torch.Tensor | None = None,
    *,
    alpha: float = 0.5,
    T: torch.Tensor | None = None,
    epsilon: float = 0.1,
    solver: str = "proximal",
    T0: torch.Tensor | str | None = None,
    max_iter: int = 100,
    tol: float = 1e-7,
    inner_max_iter: int = 200,
) -> torch.Tensor:
    """FGW value with envelope gradients w.r.t. ``M``, ``C1`` and ``C2``; ``T`` evaluates at a given plan."""
    options = SolverOptions(
        epsilon=epsilon, solver=solver, max_iter=max_iter, tol=tol, inner_max_iter=inner_max_iter
    )
    pair, Mb = _prepare(M, C1, C2, p=p, q=q, alpha=alpha)
    if T is None:
        detached = pair._replace(C1=pair.C1.detach(), C2=pair.C2.detach())
        T = solve_pair(detached, T0=T0, options=options, M=Mb.detach(), alpha=alpha)
    else:
        B, n, m = Mb.shape
        T, _ = plan_like(T, "T", B, n, m, Mb)
    value = fgw_value(Mb, pair.C1, pair.C2, T.detach(), alpha).to(pair.dtype)
    return value[0] if pair.squeeze else value


def _prepare(
    M: torch.Tensor,
    C1: torch.Tensor,
    C2: torch.Tensor,
    *,
    p: torch.Tensor | None,
    q: torch.Tensor | None,
    alpha: float,
) -> tuple[Pair, torch.Tensor]:
    alpha = check_number("alpha", alpha, strict=False)
    if alpha > 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    Mb, squeeze = cost_matrix(M)
    pair = prepare_pair(C1, C2, p=p, q=q, batch=Mb.shape[0])
    n, m = pair.C1.shape[-1], pair.C2.shape[-1]
    if Mb.shape[-2:] != (n, m):
        hint = " (transposed?)" if Mb.shape[-2:] == (m, n) else ""
        raise ValueError(
            f"M must be ({n}, {m}) for C1 ({n}x{n}) and C2 ({m}x{m}), got {tuple(M.shape)}{hint}"
        )
    if Mb.shape[0] not in (1, pair.C1.shape[0]):
        raise ValueError(f"M has batch size {Mb.shape[0]}, C1/C2 have {pair.C1.shape[0]}")
    pair = pair._replace(squeeze=squeeze and pair.squeeze)
    return pair, Mb.to(pair.C1.dtype).expand(pair.C1.shape[0], -1, -1)
