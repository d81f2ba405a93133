r"""Entropic optimal transport, log-domain and batched.

.. math::
    \mathbf{T}^* = \arg\min_{\mathbf{T} \in \Pi(\mathbf{a}, \mathbf{b})}
        \langle \mathbf{T}, \mathbf{M} \rangle - \epsilon H(\mathbf{T})

solved by alternating updates of the scaled dual potentials :math:`u = f/\epsilon, v = g/\epsilon`
with ``logsumexp`` (never forming :math:`e^{-M/\epsilon}`), so small :math:`\epsilon` cannot underflow.
The row-marginal error is read off the change of ``u`` and needs no extra pass over the matrix; it is
checked every ``check_every`` iterations only, the one host synchronisation in the loop.

Zero-mass entries are exact: their log-weight is ``-inf``, so their dual is ``-inf`` and their row or
column of the plan is exactly zero; every update and check is written to be ``-inf``-safe (no
``0 * nan``). Each problem of a batch stops on its own: once its error is below ``tol`` its duals
are frozen, so its result does not depend on the other problems in the batch. Tolerances are relative
to the problem's mass.

References: Cuturi (2013), Sinkhorn distances; Peyré & Cuturi (2019), Computational OT, §4.4.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ._base import (
    check_count,
    check_number,
    compute_dtype,
    cost_matrix,
    equal_mass,
    marginal,
    precision_floor,
    result_dtype,
    warn_non_finite,
    warn_not_converged,
)


class SinkhornResult(NamedTuple):
    """Plan and scaled duals: ``T = exp(log_K + u[..., :, None] + v[..., None, :])``."""

    T: torch.Tensor  # (B, n, m)
    u: torch.Tensor  # (B, n), -inf where a = 0
    v: torch.Tensor  # (B, m), -inf where b = 0
    err: torch.Tensor  # (B,) row-marginal L1 error relative to the mass, at the last check
    finite: torch.Tensor  # (B,) bool: False where an iterate went non-finite (the last finite one is kept)


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x.unsqueeze(-1)


def sinkhorn_log(
    log_K: torch.Tensor,
    *,
    a: torch.Tensor,
    b: torch.Tensor,
    u0: torch.Tensor | None = None,
    v0: torch.Tensor | None = None,
    max_iter: int,
    tol: float,
    check_every: int = 10,
    warn: bool = True,
) -> SinkhornResult:
    r"""Sinkhorn on a log-kernel :math:`\log K = -M/\epsilon` (plus a log-prior for proximal steps).

    Args:
        log_K: (B, n, m) log-kernel (``-inf`` allowed off the support).
        a: (B, n) source histogram (zeros allowed).
        b: (B, m) target histogram of the same mass.
        u0, v0: (B, n), (B, m) warm-start scaled duals.
        max_iter: maximum number of (u, v) update pairs.
        tol: stop a problem when :math:`\sum_i |T\mathbf{1} - a|_i / \sum_i a_i` falls below it
            (columns are exact after each v step).
        check_every: iterations between convergence checks.
        warn: warn on non-convergence or non-finite iterates.

    Returns:
        :class:`SinkhornResult` with the plan (B, n, m).
    """
    tol = precision_floor(tol, log_K.dtype)
    on_a, on_b = a > 0, b > 0
    log_a, log_b = a.log(), b.log()  # -inf off the support
    minus_inf = torch.tensor(float("-inf"), dtype=a.dtype, device=a.device)
    mass = a.sum(-1)
    u = torch.zeros_like(a) if u0 is None else u0
    v = torch.zeros_like(b) if v0 is None else v0
    good_u, good_v = u, v
    B = a.shape[0]
    active = torch.ones(B, dtype=torch.bool, device=a.device)
    finite = torch.ones_like(active)
    err = torch.full((B,), float("inf"), dtype=a.dtype, device=a.device)
    # the masks cost a few small ops per iteration, so they are applied only where needed: zero
    # weights (`sparse`) and problems already stopped (`frozen`)
    sparse = not bool(on_a.all() and on_b.all())
    frozen = False
    for it in range(1, max_iter + 1):
        u_new = log_a - torch.logsumexp(log_K + v.unsqueeze(-2), dim=-1)
        if sparse:  # an empty row of a -inf prior would otherwise give -inf - -inf = nan
            u_new = torch.where(on_a, u_new, minus_inf)
        check = it % check_every == 0 or it == max_iter
        bad = None
        if check:
            # rows of the current plan sum to a * exp(u - u_new): the error costs no extra pass;
            # off the support both are -inf and the term is 0
            step = torch.where(on_a, u - u_new, 0.0) if sparse else u - u_new
            e = (a * (1.0 - torch.exp(step)).abs()).sum(-1) / mass
            on_support = torch.where(on_a, u_new, 0.0) if sparse else u_new
            ok = torch.isfinite(e) & torch.isfinite(on_support).all(-1)
            keep = active & ok
            err = torch.where(keep, e, err)
            good_u = torch.where(_rows(keep), u_new, good_u)
            good_v = torch.where(_rows(keep), v, good_v)
            bad = active & ~ok
            if bool(bad.any()):
                finite = finite & ~bad
                u_new = torch.where(_rows(bad), good_u, u_new)
            else:
                bad = None
        u = torch.where(_rows(active), u_new, u) if frozen else u_new
        v_new = log_b - torch.logsumexp(log_K + u.unsqueeze(-1), dim=-2)
        if sparse:
            v_new = torch.where(on_b, v_new, minus_inf)
        if bad is not None:
            v_new = torch.where(_rows(bad), good_v, v_new)
        v = torch.where(_rows(active), v_new, v) if frozen else v_new
        if check:
            active = active & ok & (e > tol)
            if not bool(active.any()):
                break
            frozen = not bool(active.all())
    if warn and not bool(finite.all()):
        warn_non_finite("sinkhorn", "Increase epsilon.")
    if warn and bool(active.any()):
        worst = float(torch.where(finite, err, 0.0).max())
        warn_not_converged("sinkhorn", worst, tol, "raise max_iter or epsilon.")
    T = torch.exp(log_K + u.unsqueeze(-1) + v.unsqueeze(-2))
    return SinkhornResult(T, u, v, err, finite)


def sinkhorn(
    a: torch.Tensor | None,
    b: torch.Tensor | None,
    M: torch.Tensor,
    epsilon: float,
    *,
    max_iter: int = 1000,
    tol: float = 1e-9,
) -> torch.Tensor:
    """Entropic OT plan.

    Args:
        a: (B, n) or (n,) source weights, uniform if None; zeros give exactly zero rows.
        b: (B, m) or (m,) target weights of the same mass (rescaled to ``a``'s mass to a relative
            1e-6, float32: 1e-4; a larger mismatch is an error), uniform if None.
        M: (B, n, m) or (n, m) cost matrix.
        epsilon: entropic regularisation, in the units of ``M`` (POT's convention: this is part of the
            problem, not a solver knob, so it is not rescaled).
        max_iter, tol: iterations and the row-marginal L1 error, relative to the mass, to stop at
            (keyword only).

    Returns:
        Plan of the shape of ``M`` (float64 for integer inputs).
    """
    Mb, squeeze = cost_matrix(M)
    T = _solve(Mb.detach(), a=a, b=b, epsilon=epsilon, max_iter=max_iter, tol=tol).T.to(result_dtype(M))
    return T[0] if squeeze else T


def sinkhorn2(
    a: torch.Tensor | None,
    b: torch.Tensor | None,
    M: torch.Tensor,
    epsilon: float,
    *,
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
    Mb, squeeze = cost_matrix(M)
    res = _solve(Mb.detach(), a=a, b=b, epsilon=epsilon, max_iter=max_iter, tol=tol)
    value = (res.T.to(Mb.dtype) * Mb).sum((-2, -1)).to(result_dtype(M))
    return value[0] if squeeze else value


def _solve(
    M: torch.Tensor,
    *,
    a: torch.Tensor | None,
    b: torch.Tensor | None,
    epsilon: float,
    max_iter: int,
    tol: float,
) -> SinkhornResult:
    epsilon = check_number("epsilon", epsilon)
    check_count("max_iter", max_iter)
    check_number("tol", tol, strict=False)
    M = M.to(compute_dtype(M))
    B, n, m = M.shape
    for name, w, size in (("a", a, n), ("b", b, m)):
        if isinstance(w, torch.Tensor) and w.dim() >= 1 and w.shape[-1] != size and n != m:
            other = m if size == n else n
            hint = " (M transposed?)" if w.shape[-1] == other else ""
            raise ValueError(f"{name} has {w.shape[-1]} entries, M has shape {tuple(M.shape[-2:])}{hint}")
    ab = marginal(a, B, n, M, "a")
    bb = marginal(b, B, m, M, "b")
    bb = equal_mass(ab, bb, "a and b", M.dtype)
    return sinkhorn_log(-M / epsilon, a=ab, b=bb, max_iter=max_iter, tol=tol)
