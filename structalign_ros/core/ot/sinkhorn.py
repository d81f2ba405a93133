r"""Entropic optimal transport, stabilised and batched.

.. math::
    \mathbf{T}^* = \arg\min_{\mathbf{T} \in \Pi(\mathbf{a}, \mathbf{b})}
        \langle \mathbf{T}, \mathbf{M} \rangle - \epsilon H(\mathbf{T})

solved by alternating updates of the scaled dual potentials :math:`u = f/\epsilon, v = g/\epsilon`.
The duals live in the log domain (never :math:`e^{-M/\epsilon}` itself, so small :math:`\epsilon` cannot
underflow), but most iterations run in the scaling form on the kernel stabilised by the current duals,
:math:`\exp(\log K + u + v)`: two matrix-vector products instead of two ``logsumexp`` over the
matrix, with the same iterates to rounding, and the ``logsumexp`` updates as the fallback wherever the
scalings leave the range where the two agree (:class:`_Scaled`). The row-marginal error is read off
the change of ``u`` and needs no extra pass over the matrix; it is checked every ``check_every``
iterations only, the one host synchronisation in the loop.

Zero-mass entries are exact: their log-weight is ``-inf``, so their dual is ``-inf`` and their row or
column of the plan is exactly zero; every update and check is written to be ``-inf``-safe (no
``0 * nan``). Each problem of a batch stops on its own: once its error is below ``tol`` its duals
are frozen, so its result does not depend on the other problems in the batch. Tolerances are relative
to the problem's mass.

References: Cuturi (2013), Sinkhorn distances; Peyré & Cuturi (2019), Computational OT, §4.4.
"""

from __future__ import annotations

import math
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


# A scaled block needs at least this many iterations to pay for building its kernel.
MIN_SCALED_BLOCK = 3
# Below this log-range of the scalings (tiny weights in float32) every block runs in the log domain.
MIN_SCALING_RANGE = 2.0


class _Run:
    """State of one batched solve: the scaled duals, their last finite values and per-problem flags."""

    def __init__(self, log_K: torch.Tensor, a: torch.Tensor, b: torch.Tensor, tol: float) -> None:
        self.log_K, self.a, self.b, self.tol = log_K, a, b, tol
        self.on_a, self.on_b = a > 0, b > 0
        self.log_a, self.log_b = a.log(), b.log()  # -inf off the support
        self.minus_inf = torch.tensor(float("-inf"), dtype=a.dtype, device=a.device)
        self.mass = a.sum(-1)
        self.u, self.v = torch.zeros_like(a), torch.zeros_like(b)
        self.good_u, self.good_v = self.u, self.v
        B = a.shape[0]
        self.active = torch.ones(B, dtype=torch.bool, device=a.device)
        self.finite = torch.ones_like(self.active)
        self.err = torch.full((B,), float("inf"), dtype=a.dtype, device=a.device)
        # the masks cost a few small ops per iteration, so they are applied only where needed: zero
        # weights (`sparse`) and problems already stopped (`frozen`)
        self.sparse = not bool(self.on_a.all() and self.on_b.all())
        self.frozen = False
        self.running = True

    def stop(self, going: torch.Tensor) -> None:
        """After a check: problems not ``going`` stop; ``running`` is False once all have stopped."""
        self.active = self.active & going
        self.running = bool(self.active.any())
        self.frozen = not bool(self.active.all())

    def log_block(self, start: int, end: int) -> None:
        """Iterations ``start + 1 .. end`` with ``logsumexp``; the last one checks convergence."""
        u, v = self.u, self.v
        for it in range(start + 1, end + 1):
            u_new = self.log_a - torch.logsumexp(self.log_K + v.unsqueeze(-2), dim=-1)
            if self.sparse:  # an empty row of a -inf prior would otherwise give -inf - -inf = nan
                u_new = torch.where(self.on_a, u_new, self.minus_inf)
            check = it == end
            bad = None
            if check:
                # rows of the current plan sum to a * exp(u - u_new): the error costs no extra pass;
                # off the support both are -inf and the term is 0
                step = torch.where(self.on_a, u - u_new, 0.0) if self.sparse else u - u_new
                e = (self.a * (1.0 - torch.exp(step)).abs()).sum(-1) / self.mass
                on_support = torch.where(self.on_a, u_new, 0.0) if self.sparse else u_new
                ok = torch.isfinite(e) & torch.isfinite(on_support).all(-1)
                keep = self.active & ok
                self.err = torch.where(keep, e, self.err)
                self.good_u = torch.where(_rows(keep), u_new, self.good_u)
                self.good_v = torch.where(_rows(keep), v, self.good_v)
                bad = self.active & ~ok
                if bool(bad.any()):
                    self.finite = self.finite & ~bad
                    u_new = torch.where(_rows(bad), self.good_u, u_new)
                else:
                    bad = None
            u = torch.where(_rows(self.active), u_new, u) if self.frozen else u_new
            v_new = self.log_b - torch.logsumexp(self.log_K + u.unsqueeze(-1), dim=-2)
            if self.sparse:
                v_new = torch.where(self.on_b, v_new, self.minus_inf)
            if bad is not None:
                v_new = torch.where(_rows(bad), self.good_v, v_new)
            v = torch.where(_rows(self.active), v_new, v) if self.frozen else v_new
            if check:
                self.stop(ok & (e > self.tol))
        self.u, self.v = u, v


class _Scaled:
    r"""The same iterations in the scaling form, on a kernel stabilised by the current duals.

    A block takes its first row update in the log domain (one ``logsumexp``), builds
    :math:`\tilde K = \exp(\log K + u + v)` (the current plan: entries at most the row's mass,
    so it cannot overflow) and runs the rest as :math:`\alpha = a / \tilde K \beta`,
    :math:`\beta = b / \tilde K^\top \alpha` (two matrix-vector products instead of two
    ``logsumexp`` over the matrix), folding :math:`\log\alpha, \log\beta` into the duals at the
    block's check. Entries of :math:`\tilde K` below :math:`t e^{\tau}` (t the smallest normal number)
    are set to zero, so no subnormal number enters the products. While every scaling stays in
    :math:`[e^{-\tau}, e^{\tau}]` the entries dropped change every row and column sum by less than
    the dtype's epsilon (relative), so the iterates are the log domain's to rounding; :math:`\tau` is
    chosen per problem from the dtype, the size and the smallest positive weight w:
    :math:`e^{3\tau} = \mathrm{eps}\, w / (\max(n, m)\, t)` (about 20 for float32 at n = 128, uniform
    weights). A block in which any active problem's scalings left that range, or went non-finite, is
    discarded and run again in the log domain from its start, so the fallback changes no iterate.
    """

    def __init__(self, run: _Run) -> None:
        self.run = run
        info = torch.finfo(run.a.dtype)
        inf = torch.tensor(float("inf"), dtype=run.a.dtype, device=run.a.device)
        smallest = torch.minimum(
            torch.where(run.on_a, run.a, inf).amin(-1), torch.where(run.on_b, run.b, inf).amin(-1)
        )
        size = max(run.a.shape[-1], run.b.shape[-1])
        tau = (math.log(info.eps / (size * info.tiny)) + smallest.log()) / 3.0  # (B,)
        self.usable = tau >= MIN_SCALING_RANGE
        self.enabled = True
        tau = tau.clamp_min(0.0)
        self.low, self.high = _rows(torch.exp(-tau)), _rows(torch.exp(tau))
        self.floor = (info.tiny * torch.exp(tau))[:, None, None]  # the smallest entry kept

    def ratio(self, w: torch.Tensor, sums: torch.Tensor, on: torch.Tensor) -> torch.Tensor:
        """Scaling ``w / sums``, 0 off the support (where both are 0)."""
        return torch.where(on, w / sums, 0.0) if self.run.sparse else w / sums

    def pin(self, new: torch.Tensor) -> torch.Tensor:
        """Stopped problems keep the scaling 1: their duals do not move."""
        run = self.run
        return torch.where(_rows(run.active), new, 1.0) if run.frozen else new

    def block(self, start: int, end: int) -> bool:
        """Iterations ``start + 1 .. end`` scaled; False (and nothing changed) where unsafe."""
        run = self.run
        if end - start < MIN_SCALED_BLOCK or not self.enabled:
            return False
        # the first row update, as logsumexp computes it, keeping its exponentials: with the row maxima
        # mx and sums s of E = exp(log_K + v - mx), u = log a - mx - log s and the stabilised kernel
        # exp(log_K + u + v) is E * a / s
        K = run.log_K + run.v.unsqueeze(-2)
        top = K.amax(-1)
        top = torch.where(torch.isfinite(top), top, 0.0)  # rows that are all -inf (zero weights)
        K = K.sub_(top.unsqueeze(-1)).exp_()
        sums = K.sum(-1)
        u_base = run.log_a - top - sums.log()
        if run.sparse:
            u_base = torch.where(run.on_a, u_base, run.minus_inf)
        if run.frozen:  # a stopped problem's kernel is never used: its scalings stay 1
            u_base = torch.where(_rows(run.active), u_base, run.u)
        K = K.mul_(self.ratio(run.a, sums, run.on_a).unsqueeze(-1))
        K = K.masked_fill_(K < self.floor, 0.0)
        alpha = torch.ones_like(run.a)
        beta = self.pin(self.ratio(run.b, K.sum(-2), run.on_b))
        track_b = torch.where(run.on_b, beta, 1.0) if run.sparse else beta
        low_a = high_a = alpha
        low_b = high_b = track_b
        previous = alpha
        beta_at_check = beta
        for _ in range(start + 2, end + 1):
            previous, beta_at_check = alpha, beta
            # row sums as beta K^T: as a row vector times a matrix the CPU product is 5x faster at n = 128
            rows = (beta.unsqueeze(-2) @ K.mT).squeeze(-2)
            alpha = self.pin(self.ratio(run.a, rows, run.on_a))
            beta = self.pin(self.ratio(run.b, (alpha.unsqueeze(-2) @ K).squeeze(-2), run.on_b))
            track_a = torch.where(run.on_a, alpha, 1.0) if run.sparse else alpha
            track_b = torch.where(run.on_b, beta, 1.0) if run.sparse else beta
            low_a, high_a = torch.minimum(low_a, track_a), torch.maximum(high_a, track_a)
            low_b, high_b = torch.minimum(low_b, track_b), torch.maximum(high_b, track_b)
        # NaN fails both comparisons
        inside = ((low_a >= self.low) & (high_a <= self.high)).all(-1)
        inside = inside & ((low_b >= self.low) & (high_b <= self.high)).all(-1) & self.usable
        if bool((run.active & ~inside).any()):
            # tiny weights leave too narrow a range for the rest of the solve as well
            self.enabled = not bool((run.active & ~self.usable).any())
            return False
        # the check of iteration `end`: row sums of the plan before its u step were a * previous / alpha
        step = torch.where(run.on_a, previous / alpha, 1.0) if run.sparse else previous / alpha
        e = (run.a * (1.0 - step).abs()).sum(-1) / run.mass
        u_new = u_base + alpha.log()
        keep = _rows(run.active)
        run.err = torch.where(run.active, e, run.err)
        run.good_u = torch.where(keep, u_new, run.good_u)
        run.good_v = torch.where(keep, run.v + beta_at_check.log(), run.good_v)
        run.u, run.v = u_new, run.v + beta.log()
        run.stop(e > run.tol)
        return True


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

    Runs in blocks of ``check_every`` iterations, each ending in a convergence check. A block first
    tries the scaling form (:class:`_Scaled`) and falls back to the log-domain updates when its scalings
    left the range in which the two agree to rounding; the iterates are the same either way.

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
    run = _Run(log_K, a, b, precision_floor(tol, log_K.dtype))
    if u0 is not None:
        run.u = run.good_u = u0
    if v0 is not None:
        run.v = run.good_v = v0
    scaled = _Scaled(run)
    done = 0
    while done < max_iter and run.running:
        end = min(max_iter, (done // check_every + 1) * check_every)
        if not scaled.block(done, end):
            run.log_block(done, end)
        done = end
    if warn and not bool(run.finite.all()):
        warn_non_finite("sinkhorn", "Increase epsilon.")
    if warn and bool(run.active.any()):
        worst = float(torch.where(run.finite, run.err, 0.0).max())
        warn_not_converged("sinkhorn", worst, run.tol, "raise max_iter or epsilon.")
    T = torch.exp(log_K + run.u.unsqueeze(-1) + run.v.unsqueeze(-2))
    return SinkhornResult(T, run.u, run.v, run.err, run.finite)


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
