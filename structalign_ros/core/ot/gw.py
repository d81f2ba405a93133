r"""Gromov–Wasserstein discrepancy with the square loss, batched.

.. math::
    \mathrm{GW}(\mathbf{C_1}, \mathbf{C_2}, \mathbf{p}, \mathbf{q}) =
        \min_{\mathbf{T} \in \Pi(\mathbf{p}, \mathbf{q})}
        \sum_{i,j,k,l} (\mathbf{C_1}_{i,k} - \mathbf{C_2}_{j,l})^2 \mathbf{T}_{i,j} \mathbf{T}_{k,l}

The quadratic form is evaluated in :math:`O(n^2 m + n m^2)` with the decomposition of Peyré et al.
(2016): :math:`L \otimes T = (\mathbf{C_1}^{2} \mathbf{r}) \mathbf{1}^\top + \mathbf{1} (\mathbf{C_2}^{2}
\mathbf{c})^\top - 2 \mathbf{C_1} \mathbf{T} \mathbf{C_2}^\top`, with r, c the marginals of T.

:func:`gromov_wasserstein` returns a plan; :func:`gromov_wasserstein2` returns the value, differentiable
w.r.t. both matrices by the envelope theorem (the plan is held fixed: no unrolling through the solver).
GW is non-convex: the start matters. For paired modalities (row i of both matrices is the same sample)
``T0="identity"`` is feasible and far better than :math:`\mathbf{p}\mathbf{q}^\top`.

References: Mémoli (2011); Peyré, Cuturi & Solomon (2016); Xu et al. (2019), Gromov-Wasserstein learning.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from ._base import batched, check_finite, compute_dtype, marginal
from ._solver import initial_plan, solve_plan


class Pair(NamedTuple):
    """Two batched structure matrices in the compute dtype with their marginals."""

    C1: torch.Tensor  # (B, n, n)
    C2: torch.Tensor  # (B, m, m)
    p: torch.Tensor  # (B, n)
    q: torch.Tensor  # (B, m)
    squeeze: bool  # inputs had no batch dimension
    dtype: torch.dtype  # dtype of the inputs, for the results


def prepare_pair(
    C1: torch.Tensor, C2: torch.Tensor, p: torch.Tensor | None, q: torch.Tensor | None, batch: int = 1
) -> Pair:
    """Batch, broadcast (to at least ``batch`` problems) and upcast (half -> float32) a GW problem."""
    check_finite(C1=C1, C2=C2)
    (C1b, s1), (C2b, s2) = batched(C1, 2), batched(C2, 2)
    B = max(C1b.shape[0], C2b.shape[0], batch)
    dt = compute_dtype(C1b, C2b)
    C1b = C1b.to(dt).expand(B, -1, -1)
    C2b = C2b.to(dt).expand(B, -1, -1)
    pb = marginal(p, B, C1b.shape[-1], C1b)
    qb = marginal(q, B, C2b.shape[-1], C2b)
    return Pair(C1b, C2b, pb, qb, s1 and s2, C1.dtype)


def gw_value(C1: torch.Tensor, C2: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """Square-loss GW objective at a given plan; differentiable in all three.

    Args:
        C1: (B, n, n), C2: (B, m, m), T: (B, n, m).

    Returns:
        (B,) values. Uses the marginals of ``T`` itself, so it is the exact quadratic form for any T.
    """
    r, c = T.sum(-1), T.sum(-2)
    own1 = (r * ((C1 * C1) @ r.unsqueeze(-1)).squeeze(-1)).sum(-1)
    own2 = (c * ((C2 * C2) @ c.unsqueeze(-1)).squeeze(-1)).sum(-1)
    cross = ((C1 @ T @ C2.transpose(-1, -2)) * T).sum((-2, -1))
    return own1 + own2 - 2.0 * cross


def gw_gradient(
    C1: torch.Tensor, C2: torch.Tensor, p: torch.Tensor, q: torch.Tensor
) -> Callable[[torch.Tensor], torch.Tensor]:
    """T -> gradient of the GW objective at T for plans with marginals (p, q), shape (B, n, m)."""
    C1T, C2T = C1.transpose(-1, -2), C2.transpose(-1, -2)
    sq1, sq2 = C1 * C1, C2 * C2
    const = (sq1 @ p.unsqueeze(-1)) + (sq2 @ q.unsqueeze(-1)).transpose(-1, -2)  # (B, n, m)
    if torch.allclose(C1, C1T) and torch.allclose(C2, C2T):
        const2 = 2.0 * const
        return lambda T: const2 - 4.0 * (C1 @ T @ C2T)
    const = (
        const
        + (sq1.transpose(-1, -2) @ p.unsqueeze(-1))
        + (sq2.transpose(-1, -2) @ q.unsqueeze(-1)).transpose(-1, -2)
    )
    return lambda T: const - 2.0 * (C1 @ T @ C2T + C1T @ T @ C2)


def gromov_wasserstein(
    C1: torch.Tensor,
    C2: torch.Tensor,
    p: torch.Tensor | None = None,
    q: torch.Tensor | None = None,
    epsilon: float = 0.01,
    solver: str = "proximal",
    T0: torch.Tensor | str | None = None,
    max_iter: int = 100,
    tol: float = 1e-7,
    inner_max_iter: int = 200,
) -> torch.Tensor:
    """GW coupling.

    Args:
        C1: (B, n, n) or (n, n) structure (kernel or distance) matrices of the source.
        C2: (B, m, m) or (m, m) of the target; an unbatched side is broadcast.
        p, q: (B, n)/(n,) and (B, m)/(m,) weights, uniform if None.
        epsilon: step regularisation (gradient units; unit-scale kernels give gradients of order 1).
        solver: ``"proximal"`` (sharp, converges to an unregularised local optimum), ``"entropic"``
            (Peyré's entropic GW, the fixed point of POT's ``entropic_gromov_wasserstein``), or
            ``"pot"`` (POT's exact conditional-gradient solver on the CPU, for reference).
        T0: ``"product"`` (default), ``"identity"`` for paired samples, or a (B, n, m) coupling.
        max_iter, tol: outer iterations and stopping threshold on the change of the plan.
        inner_max_iter: Sinkhorn iterations per projection.

    Returns:
        (B, n, m) or (n, m) plan, in the dtype of ``C1``.
    """
    pair = prepare_pair(C1.detach(), C2.detach(), p, q)
    T = solve_pair(pair, epsilon, solver, T0, max_iter, tol, inner_max_iter)
    T = T.to(pair.dtype)
    return T[0] if pair.squeeze else T


def gromov_wasserstein2(
    C1: torch.Tensor,
    C2: torch.Tensor,
    p: torch.Tensor | None = None,
    q: torch.Tensor | None = None,
    T: torch.Tensor | None = None,
    epsilon: float = 0.01,
    solver: str = "proximal",
    T0: torch.Tensor | str | None = None,
    max_iter: int = 100,
    tol: float = 1e-7,
    inner_max_iter: int = 200,
) -> torch.Tensor:
    """GW value, differentiable w.r.t. ``C1`` and ``C2`` with the plan held fixed (envelope gradient).

    Args:
        T: evaluate at this (B, n, m) plan instead of solving; other arguments as in
            :func:`gromov_wasserstein`.

    Returns:
        (B,) or scalar value, in the dtype of ``C1``.
    """
    pair = prepare_pair(C1, C2, p, q)
    if T is None:
        detached = pair._replace(C1=pair.C1.detach(), C2=pair.C2.detach())
        T = solve_pair(detached, epsilon, solver, T0, max_iter, tol, inner_max_iter)
    Tb, _ = batched(T.detach().to(pair.C1.dtype), 2)
    value = gw_value(pair.C1, pair.C2, Tb.expand(pair.C1.shape[0], -1, -1)).to(pair.dtype)
    return value[0] if pair.squeeze else value


def solve_pair(
    pair: Pair,
    epsilon: float,
    solver: str,
    T0: torch.Tensor | str | None,
    max_iter: int,
    tol: float,
    inner: int,
    M: torch.Tensor | None = None,
    alpha: float = 1.0,
) -> torch.Tensor:
    """Plan of a GW problem, or of a fused one when a (B, n, m) feature cost ``M`` is given."""
    if solver == "pot":
        from .reference import pot_fgw_plans, pot_gw_plans

        start = initial_plan(T0, pair.p, pair.q, "pot")
        if M is None:
            return pot_gw_plans(pair.C1, pair.C2, pair.p, pair.q, start)
        return pot_fgw_plans(M, pair.C1, pair.C2, pair.p, pair.q, alpha, start)
    start = initial_plan(T0, pair.p, pair.q, solver)
    grad = gw_gradient(pair.C1, pair.C2, pair.p, pair.q)
    if M is not None:
        feature, gw_grad = (1.0 - alpha) * M, grad
        grad = lambda T: feature + alpha * gw_grad(T)  # noqa: E731
    what = "gromov_wasserstein" if M is None else "fused_gromov_wasserstein"
    return solve_plan(
        grad, pair.p, pair.q, start, epsilon, solver, max_iter, tol, inner_max_iter=inner, what=what
    )
