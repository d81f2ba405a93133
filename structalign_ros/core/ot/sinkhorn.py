r"""Entropic optimal transport, log-domain and batched.

.. math::
    \mathbf{T}^* = \arg\min_{\mathbf{T} \in \Pi(\mathbf{a}, \mathbf{b})}
        \langle \mathbf{T}, \mathbf{M} \rangle - \epsilon H(\mathbf{T})

solved by alternating updates of the scaled dual potentials :math:`u = f/\epsilon, v = g/\epsilon`
with ``logsumexp`` (never forming :math:`e^{-M/\epsilon}`), so small :math:`\epsilon` cannot underflow.
The row-marginal error is read off the change of ``u`` and needs no extra pass over the matrix; it is
checked every ``check_every`` iterations only, the one host synchronisation in the loop.

References: Cuturi (2013), Sinkhorn distances; Peyré & Cuturi (2019), Computational OT, §4.4.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ._base import (
    batched,
    check_finite,
    compute_dtype,
    marginal,
    precision_floor,
    warn_non_finite,
    warn_not_converged,
)


class SinkhornResult(NamedTuple):
    """Plan and scaled duals: ``T = exp(log_K + u[..., :, None] + v[..., None, :])``."""

    T: torch.Tensor  # (B, n, m)
    u: torch.Tensor  # (B, n)
    v: torch.Tensor  # (B, m)


def sinkhorn_log(
    a: torch.Tensor,
    b: torch.Tensor,
    log_K: torch.Tensor,
    u0: torch.Tensor | None = None,
    v0: torch.Tensor | None = None,
    max_iter: int = 1000,
    tol: float = 1e-9,
    check_every: int = 10,
    warn: bool = True,
) -> SinkhornResult:
    r"""Sinkhorn on a log-kernel :math:`\log K = -M/\epsilon` (plus a log-prior for proximal steps).

    Args:
        a: (B, n) source histogram.
        b: (B, m) target histogram.
        log_K: (B, n, m) log-kernel.
        u0, v0: (B, n), (B, m) warm-start scaled duals.
        max_iter: maximum number of (u, v) update pairs.
        tol: stop when :math:`\sum_i |T\mathbf{1} - a|_i` falls below it (columns are exact after each
            v step).
        check_every: iterations between convergence checks.
        warn: warn on non-convergence or non-finite iterates.

    Returns:
        :class:`SinkhornResult` with the plan (B, n, m).
    """
    tol = precision_floor(tol, log_K.dtype)
    log_a, log_b = a.log(), b.log()
    v = torch.zeros_like(b) if v0 is None else v0
    u = torch.zeros_like(a) if u0 is None else u0
    good_u, good_v = u, v
    err = float("inf")
    for it in range(1, max_iter + 1):
        u_new = log_a - torch.logsumexp(log_K + v.unsqueeze(-2), dim=-1)
        if it % check_every == 0 or it == max_iter:
            # rows of the current plan sum to a * exp(u - u_new): the error costs no extra pass
            err = float((a * (1.0 - torch.exp(u - u_new)).abs()).sum(-1).max())
            if err != err or not torch.isfinite(u_new).all():
                if warn:
                    warn_non_finite("sinkhorn", "Increase epsilon.")
                u, v = good_u, good_v
                break
            good_u, good_v = u_new, v
        u = u_new
        v = log_b - torch.logsumexp(log_K + u.unsqueeze(-1), dim=-2)
        if err < tol:
            break
    else:
        if warn and err > tol:
            warn_not_converged("sinkhorn", err, tol, "raise max_iter or epsilon.")
    T = torch.exp(log_K + u.unsqueeze(-1) + v.unsqueeze(-2))
    return SinkhornResult(T, u, v)


def sinkhorn(
    a: torch.Tensor | None,
    b: torch.Tensor | None,
    M: torch.Tensor,
    epsilon: float,
    max_iter: int = 1000,
    tol: float = 1e-9,
) -> torch.Tensor:
    """Entropic OT plan.

    Args:
        a: (B, n) or (n,) source weights, uniform if None.
        b: (B, m) or (m,) target weights, uniform if None.
        M: (B, n, m) or (n, m) cost matrix.
        epsilon: entropic regularisation, in the units of ``M``.

    Returns:
        Plan of the shape of ``M``.
    """
    Mb, squeeze = batched(M, 2)
    T = _solve(a, b, Mb.detach(), epsilon, max_iter, tol).T.to(M.dtype)
    return T[0] if squeeze else T


def sinkhorn2(
    a: torch.Tensor | None,
    b: torch.Tensor | None,
    M: torch.Tensor,
    epsilon: float,
    max_iter: int = 1000,
    tol: float = 1e-9,
) -> torch.Tensor:
    r"""Transport cost :math:`\langle \mathbf{T}^*, \mathbf{M} \rangle` (as POT's ``sinkhorn2``).

    Differentiable w.r.t. ``M`` by the envelope theorem: the gradient is the plan :math:`\mathbf{T}^*`,
    the gradient of the regularised objective at its optimum (not unrolled through the iterations).
    ``a`` and ``b`` are treated as constants.

    Returns:
        (B,) or scalar, in the dtype of ``M``.
    """
    Mb, squeeze = batched(M, 2)
    res = _solve(a, b, Mb.detach(), epsilon, max_iter, tol)
    value = (res.T.to(Mb.dtype) * Mb).sum((-2, -1))
    return value[0] if squeeze else value


def _solve(
    a: torch.Tensor | None, b: torch.Tensor | None, M: torch.Tensor, epsilon: float, max_iter: int, tol: float
) -> SinkhornResult:
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    check_finite(M=M)
    M = M.to(compute_dtype(M))
    B, n, m = M.shape
    ab = marginal(a.detach() if a is not None else None, B, n, M)
    bb = marginal(b.detach() if b is not None else None, B, m, M)
    return sinkhorn_log(ab, bb, -M / epsilon, max_iter=max_iter, tol=tol)
