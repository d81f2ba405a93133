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
``T0="identity"`` is feasible and far better than :math:`\mathbf{p}\mathbf{q}^\top`. The default
``T0="auto"`` runs the product start and, where the identity coupling is feasible (n == m, p == q),
the identity start too, in one batched solve, and keeps the lower value per problem.

For the proximal solver ``epsilon`` is relative to each problem's scale, :func:`problem_scale` (1 for
kernels with entries in [0, 1] and unit mass), so GW(sA, sB) = s² GW(A, B) holds for the returned
values too.

References: Mémoli (2011); Peyré, Cuturi & Solomon (2016); Xu et al. (2019), Gromov-Wasserstein learning.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from ._base import batch_size, compute_dtype, detach, equal_mass, marginal, plan_like, result_dtype, structure
from ._solver import SolverOptions, identity_feasible, initial_plan, solve_plan


class Pair(NamedTuple):
    """Two batched structure matrices in the compute dtype with their marginals."""

    C1: torch.Tensor  # (B, n, n)
    C2: torch.Tensor  # (B, m, m)
    p: torch.Tensor  # (B, n)
    q: torch.Tensor  # (B, m), of the mass of p
    squeeze: bool  # inputs had no batch dimension
    dtype: torch.dtype  # dtype of the results


def prepare_pair(
    C1: torch.Tensor, C2: torch.Tensor, *, p: torch.Tensor | None, q: torch.Tensor | None, batch: int = 1
) -> Pair:
    """Validate, batch, broadcast (to ``batch`` problems) and upcast (half -> float32) a GW problem."""
    (C1b, s1), (C2b, s2) = structure(C1, "C1"), structure(C2, "C2")
    B = batch_size(C1=C1b.shape[0], C2=C2b.shape[0], batch=batch)
    dt = compute_dtype(C1b, C2b)
    C1b = C1b.to(dt).expand(B, -1, -1)
    C2b = C2b.to(dt).expand(B, -1, -1)
    pb = marginal(p, B, C1b.shape[-1], C1b, "p")
    qb = marginal(q, B, C2b.shape[-1], C2b, "q")
    qb = equal_mass(pb, qb, "p and q", dt)
    return Pair(C1b, C2b, pb, qb, s1 and s2, result_dtype(C1))


def problem_scale(pair: Pair) -> torch.Tensor:
    """(B,) scale of each problem's GW gradient: mass × (largest |entry| on the support)².

    Homogeneous: scaling both structures by s scales it by s², exactly as the gradient, so a relative
    epsilon gives the same iterates at every scale. Zero structures get 1.
    """
    on1 = pair.p > 0
    on2 = pair.q > 0
    m1 = (pair.C1.abs() * (on1.unsqueeze(-1) & on1.unsqueeze(-2))).amax((-2, -1))
    m2 = (pair.C2.abs() * (on2.unsqueeze(-1) & on2.unsqueeze(-2))).amax((-2, -1))
    s = pair.p.sum(-1) * torch.maximum(m1, m2).square()
    return torch.where(s > 0, s, torch.ones_like(s))


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
    C1: torch.Tensor, C2: torch.Tensor, *, p: torch.Tensor, q: torch.Tensor
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
    *,
    epsilon: float = 0.1,
    solver: str = "proximal",
    T0: torch.Tensor | str | None = None,
    max_iter: int = 100,
    tol: float = 1e-7,
    inner_max_iter: int = 200,
) -> torch.Tensor:
    """GW coupling.

    Args (those after ``q`` by keyword only):
        C1: (B, n, n) or (n, n) structure (kernel or distance) matrices of the source.
        C2: (B, m, m) or (m, m) of the target; an unbatched side is broadcast.
        p, q: (B, n)/(n,) and (B, m)/(m,) weights, uniform if None; finite, non-negative, of equal
            mass (q is rescaled to p's mass to a relative 1e-6, float32: 1e-4). Zero entries give
            exactly zero rows/columns of the plan.
        epsilon: proximal: step regularisation relative to the problem's scale (:func:`problem_scale`:
            mass × max|C|², 1 for unit-mass kernels in [0, 1]); entropic: the regularisation itself, in
            the units of the gradient (not rescaled).
        solver: ``"proximal"`` (sharp, converges to an unregularised local optimum), ``"entropic"``
            (Peyré's entropic GW at ε, the fixed point of POT's
            ``entropic_gromov_wasserstein``), or ``"pot"`` (POT's exact solver on the CPU, reference).
        T0: ``None``/``"auto"`` (default: the product start, plus the identity start where it is
            feasible, the lower value kept per problem), ``"product"``, ``"identity"`` for paired
            samples, or a (B, n, m)/(n, m) non-negative start.
        max_iter, tol: outer iterations and stopping threshold on the change of the plan (Frobenius,
            relative to the mass).
        inner_max_iter: Sinkhorn iterations per projection.

    Returns:
        (B, n, m) or (n, m) plan, in the dtype of ``C1`` (float64 for integer inputs).
    """
    options = SolverOptions(
        epsilon=epsilon, solver=solver, max_iter=max_iter, tol=tol, inner_max_iter=inner_max_iter
    )
    pair = prepare_pair(detach(C1), detach(C2), p=p, q=q)
    T = solve_pair(pair, T0=T0, options=options)
    T = T.to(pair.dtype)
    return T[0] if pair.squeeze else T


def gromov_wasserstein2(
    C1: torch.Tensor,
    C2: torch.Tensor,
    p: torch.Tensor | None = None,
    q: torch.Tensor | None = None,
    *,
    T: torch.Tensor | None = None,
    epsilon: float = 0.1,
    solver: str = "proximal",
    T0: torch.Tensor | str | None = None,
    max_iter: int = 100,
    tol: float = 1e-7,
    inner_max_iter: int = 200,
) -> torch.Tensor:
    """GW value, differentiable w.r.t. ``C1`` and ``C2`` with the plan held fixed (envelope gradient).

    Args:
        T: evaluate at this (B, n, m)/(n, m) non-negative plan instead of solving (the other knobs are
            still validated); other arguments as in :func:`gromov_wasserstein`.

    Returns:
        (B,) or scalar value, in the dtype of ``C1``.
    """
    options = SolverOptions(
        epsilon=epsilon, solver=solver, max_iter=max_iter, tol=tol, inner_max_iter=inner_max_iter
    )
    pair = prepare_pair(C1, C2, p=p, q=q)
    B, n, m = pair.C1.shape[0], pair.C1.shape[-1], pair.C2.shape[-1]
    if T is None:
        detached = pair._replace(C1=pair.C1.detach(), C2=pair.C2.detach())
        Tb = solve_pair(detached, T0=T0, options=options)
    else:
        Tb, _ = plan_like(T, "T", B, n, m, pair.C1)
    value = gw_value(pair.C1, pair.C2, Tb.detach()).to(pair.dtype)
    return value[0] if pair.squeeze else value


def starts(T0: torch.Tensor | str | None, *, p: torch.Tensor, q: torch.Tensor) -> list[torch.Tensor | str]:
    """The starts ``T0`` stands for: ``"auto"`` is the product, plus the identity where feasible."""
    if T0 is None or (isinstance(T0, str) and T0 == "auto"):
        return ["product", "identity"] if identity_feasible(p, q) else ["product"]
    return [T0]


def solve_pair(
    pair: Pair,
    *,
    T0: torch.Tensor | str | None,
    options: SolverOptions,
    M: torch.Tensor | None = None,
    alpha: float = 1.0,
) -> torch.Tensor:
    """Plan of a GW problem, or of a fused one when a (B, n, m) feature cost ``M`` is given.

    Several starts (``T0="auto"``) are solved as one batch of S·B problems; each problem keeps the
    plan of lowest objective.
    """
    solver = options.solver
    if solver == "pot":
        from .reference import pot_fgw_plans, pot_gw_plans

        start = initial_plan(starts(T0, p=pair.p, q=pair.q)[0], p=pair.p, q=pair.q, solver="pot")
        if M is None:
            return pot_gw_plans(pair.C1, pair.C2, pair.p, pair.q, start)
        return pot_fgw_plans(M, pair.C1, pair.C2, pair.p, pair.q, alpha, start)
    tried = starts(T0, p=pair.p, q=pair.q)
    S, B = len(tried), pair.C1.shape[0]
    start = torch.cat([initial_plan(t, p=pair.p, q=pair.q, solver=solver) for t in tried])

    def rep(x: torch.Tensor) -> torch.Tensor:
        return x if S == 1 else x.repeat(S, *([1] * (x.dim() - 1)))

    C1, C2, p, q = rep(pair.C1), rep(pair.C2), rep(pair.p), rep(pair.q)
    scale = problem_scale(Pair(C1, C2, p, q, False, pair.dtype))
    grad = gw_gradient(C1, C2, p=p, q=q)
    Ms = None
    if M is not None:
        Ms = rep(M)
        feature, gw_grad = (1.0 - alpha) * Ms, grad
        grad = lambda T: feature + alpha * gw_grad(T)  # noqa: E731
        on = p.unsqueeze(-1) * q.unsqueeze(-2) > 0
        scale = alpha * scale + (1.0 - alpha) * (Ms.abs() * on).amax((-2, -1))
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    what = "gromov_wasserstein" if M is None else "fused_gromov_wasserstein"
    T = solve_plan(
        grad,
        p=p,
        q=q,
        start=start,
        options=options,
        what=what,
        scale=scale if solver == "proximal" else None,
    )
    if S == 1:
        return T
    value = gw_value(C1, C2, T)
    if Ms is not None:
        value = (1.0 - alpha) * (Ms * T).sum((-2, -1)) + alpha * value
    best = value.view(S, B).argmin(0)  # (B,)
    return T.view(S, B, *T.shape[1:])[best, torch.arange(B, device=T.device)]
