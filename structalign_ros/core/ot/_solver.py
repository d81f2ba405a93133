r"""The plan solver shared by GW and fused GW: mirror descent with Sinkhorn projections.

For a smooth objective :math:`F(\mathbf{T})` over couplings :math:`\Pi(\mathbf{p}, \mathbf{q})`, each
step linearises :math:`F` at the current plan and solves one entropic OT problem:

- ``"proximal"`` (default, Xu et al. 2019):
  :math:`\mathbf{T}_{k+1} = \arg\min_\mathbf{T} \langle \nabla F(\mathbf{T}_k), \mathbf{T}\rangle
  + \epsilon\,\mathrm{KL}(\mathbf{T} \| \mathbf{T}_k)`; converges to a stationary point of the
  unregularised problem, so the plan sharpens as it goes.
- ``"entropic"`` (Peyré et al. 2016): the same with :math:`-\epsilon H(\mathbf{T})` in place of the KL
  term; converges to a stationary point of the entropic problem (POT's ``entropic_gromov_wasserstein``
  with ``solver="PGD"`` runs exactly these iterations).

For the proximal solver ``epsilon`` is a step size relative to the problem's scale: each problem b of a
batch steps with ``epsilon * scale[b]`` (GW: mass times the largest squared structure entry, see
``gw.problem_scale``), so GW(sA, sB) / s² does not depend on s. For the entropic solver ``epsilon`` is
part of the problem (entropic GW at ε, POT's convention, as for :func:`sinkhorn`) and the callers pass
no scale; its tolerances are still relative. Each problem stops on its own (its plan is frozen once it
has converged), and only when its plan has stopped moving *and* the projection of its last step met
``inner_tol``: an unfinished projection cannot pass for convergence. Every way of stopping short
warns (:class:`OTConvergenceWarning`, :class:`OTNumericalWarning`) and names the knob to turn.

Everything stays on the input's device; the only host synchronisations are the convergence checks
every ``check_every`` steps.

The knobs of a solve travel together as one frozen :class:`SolverOptions`, validated once when it is
built; the public solvers build it from their keyword arguments, the internal functions take it as
``options=`` and their problem data (marginals, starts) by keyword only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ._base import check_count, check_number, plan_like, precision_floor, warn_non_finite, warn_not_converged
from .sinkhorn import sinkhorn_log

SOLVERS = ("proximal", "entropic")
STARTS = ("auto", "product", "identity")

# Mass a proximal start keeps off a sparse initial plan: KL steps can never move mass onto entries
# that start at exactly zero, so a permutation start is mixed with a little of p q^T.
SPARSE_START_MIX = 1e-5


@dataclass(frozen=True)
class SolverOptions:
    """The iteration knobs of a GW-type solve, validated on construction (errors name the knob).

    Attributes:
        epsilon: proximal: step regularisation relative to each problem's scale (smaller takes bigger
            steps but makes each projection harder); entropic: the regularisation itself (smaller is
            sharper and slower).
        solver: ``"proximal"``, ``"entropic"``, or ``"pot"`` (POT's exact solvers, :mod:`.reference`).
        max_iter, tol: outer steps; a problem stops once ||T_k+1 - T_k||_F / mass < tol and its
            projection met ``inner_tol``. For a barycenter: block-coordinate rounds and the relative
            improvement of the objective to stop at.
        inner_max_iter, inner_tol: the Sinkhorn projection of each step (relative row error).
        check_every: outer steps between convergence checks (host synchronisations).
        warn: warn when a problem ends unconverged (off for the barycenter's per-round steps, a fixed
            budget).
    """

    epsilon: float
    solver: str
    max_iter: int
    tol: float
    inner_max_iter: int
    inner_tol: float = 1e-7
    check_every: int = 5
    warn: bool = True

    def __post_init__(self) -> None:
        check_number("epsilon", self.epsilon)
        if self.solver not in (*SOLVERS, "pot"):
            raise ValueError(f"solver must be one of {(*SOLVERS, 'pot')}, got {self.solver!r}")
        check_count("max_iter", self.max_iter)
        check_number("tol", self.tol, strict=False)
        check_count("inner_max_iter", self.inner_max_iter)
        check_number("inner_tol", self.inner_tol, strict=False)
        check_count("check_every", self.check_every)


def identity_feasible(p: torch.Tensor, q: torch.Tensor) -> bool:
    """The diagonal coupling diag(p) is feasible: equal sizes and p == q (paired samples)."""
    return p.shape == q.shape and bool(torch.allclose(p, q, rtol=1e-6, atol=0.0))


def initial_plan(
    T0: torch.Tensor | str | None, *, p: torch.Tensor, q: torch.Tensor, solver: str
) -> torch.Tensor:
    """Starting coupling (B, n, m).

    ``"product"`` is :math:`\\mathbf{p}\\mathbf{q}^\\top`; ``"identity"`` is the diagonal coupling of
    paired samples (requires n == m and p == q), the far better start when row i of both matrices
    describes the same sample; a tensor is used as given (validated: shape, finite, non-negative).
    ``None`` and ``"auto"`` mean ``"product"`` here (the multi-start callers expand ``"auto"`` first).
    """
    product = p.unsqueeze(-1) * q.unsqueeze(-2)
    if T0 is None or (isinstance(T0, str) and T0 in ("product", "auto")):
        return product
    if isinstance(T0, str):
        if T0 != "identity":
            raise ValueError(f"T0 must be one of {STARTS} or a tensor, got {T0!r}")
        if not identity_feasible(p, q):
            raise ValueError("T0='identity' needs paired samples: equal sizes and p == q")
        T = torch.diag_embed(p)
    else:
        T, _ = plan_like(T0, "T0", p.shape[0], p.shape[-1], q.shape[-1], p)
        if not bool((T.sum((-2, -1)) > 0).all()):
            raise ValueError("T0 has zero mass")
    if solver == "proximal":
        T = (1.0 - SPARSE_START_MIX) * T + SPARSE_START_MIX * product
    return T


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x[:, None, None]


def solve_plan(
    grad: Callable[[torch.Tensor], torch.Tensor],
    *,
    p: torch.Tensor,
    q: torch.Tensor,
    start: torch.Tensor,
    options: SolverOptions,
    what: str = "gromov_wasserstein",
    scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mirror descent over couplings.

    Args:
        grad: T (B, n, m) -> gradient of the objective at T, (B, n, m).
        p, q: (B, n), (B, m) marginals of equal mass (zeros allowed: those rows/columns stay zero).
        start: (B, n, m) first plan, strictly positive on the support for ``"proximal"`` (see
            :func:`initial_plan`).
        options: the knobs (:class:`SolverOptions`); ``options.solver`` is ``"proximal"`` or
            ``"entropic"`` here, and ``options.epsilon`` is relative to ``scale``.
        what: the solver's name in warnings.
        scale: (B,) scale of each problem's gradient; epsilon is multiplied by it. 1 if None.

    Returns:
        (B, n, m) plan, exactly feasible.
    """
    if options.solver not in SOLVERS:
        raise ValueError(f"solve_plan runs one of {SOLVERS}, got {options.solver!r} (see reference.py)")
    B = p.shape[0]
    tol = precision_floor(options.tol, start.dtype) if options.tol > 0 else 0.0
    inner_tol = precision_floor(options.inner_tol, start.dtype)
    eps = torch.full((B,), options.epsilon, dtype=start.dtype, device=start.device)
    if scale is not None:
        eps = eps * scale.to(start.dtype)
    eps = _rows(eps)
    mass = p.sum(-1)
    T = good = start
    log_T = start.log() if options.solver == "proximal" else None  # -inf off the support
    u = v = None
    active = torch.ones(B, dtype=torch.bool, device=start.device)
    finite = torch.ones_like(active)
    change = torch.full((B,), float("inf"), dtype=start.dtype, device=start.device)
    inner_err = change.clone()
    frozen = False
    max_iter = options.max_iter
    for it in range(1, max_iter + 1):
        log_K = -grad(T) / eps
        if log_T is not None:
            log_K = log_K + log_T
        res = sinkhorn_log(
            log_K, a=p, b=q, u0=u, v0=v, max_iter=options.inner_max_iter, tol=inner_tol, warn=False
        )
        check = it % options.check_every == 0 or it == max_iter
        bad = None
        new_T = res.T
        if check:
            ok = res.finite & torch.isfinite(new_T).flatten(1).all(-1)
            bad = active & ~ok
            finite = finite & ~bad
            keep = active & ok
            step = torch.linalg.matrix_norm(torch.nan_to_num(new_T - T)) / mass
            change = torch.where(keep, step, change)
            inner_err = torch.where(keep, res.err, inner_err)
            good = torch.where(_rows(keep), new_T, good)
            new_T = torch.where(_rows(bad), good, new_T)
        # stopped problems keep their state; the masks are skipped while none has stopped
        moving = _rows(active) if frozen else None
        T = new_T if moving is None else torch.where(moving, new_T, T)
        if log_T is not None:
            # the duals are folded into the prior: the next projection starts from zero duals
            folded = log_K + res.u.unsqueeze(-1) + res.v.unsqueeze(-2)
            log_T = folded if moving is None else torch.where(moving, folded, log_T)
        elif moving is None:
            u, v = res.u, res.v
        else:
            u, v = torch.where(active[:, None], res.u, u), torch.where(active[:, None], res.v, v)
        if check:
            done = (change < tol) & (inner_err <= inner_tol)
            active = active & ~bad & ~done
            if not bool(active.any()):
                break
            frozen = not bool(active.all())
    if options.warn:
        _report(what, active & finite, finite, change, inner_err, tol, inner_tol)
    # Late proximal steps act like Sinkhorn at epsilon / k and may leave their projection unfinished;
    # the plan handed back is made exactly feasible.
    return round_to_coupling(T, p=p, q=q)


def _report(
    what: str,
    open_: torch.Tensor,
    finite: torch.Tensor,
    change: torch.Tensor,
    inner_err: torch.Tensor,
    tol: float,
    inner_tol: float,
) -> None:
    """Warn for problems that ended non-finite or unconverged, naming the knob."""
    if not bool(finite.all()):
        warn_non_finite(what, "Increase epsilon.")
    if not bool(open_.any()):
        return
    inner = float(torch.where(open_, inner_err, 0.0).max())
    if inner > inner_tol:
        warn_not_converged(
            f"{what}'s Sinkhorn projection", inner, inner_tol, "raise inner_max_iter (or epsilon)."
        )
    outer = float(torch.where(open_, change, 0.0).max())
    if outer >= tol:
        warn_not_converged(
            what, outer, tol, "raise max_iter (a smaller epsilon takes bigger proximal steps)."
        )


def round_to_coupling(T: torch.Tensor, *, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Nearest-in-L1 feasible coupling of a nonnegative near-coupling (Altschuler et al. 2017, Alg. 2).

    Scales down overfull rows, then overfull columns, and adds the rank-one correction
    :math:`\\mathbf{e}_r \\mathbf{e}_c^\\top / \\|\\mathbf{e}_r\\|_1` for the missing mass, so
    :math:`\\|\\mathbf{T}' - \\mathbf{T}\\|_1 \\le 2(\\|\\mathbf{T}\\mathbf{1} - \\mathbf{p}\\|_1 +
    \\|\\mathbf{T}^\top\\mathbf{1} - \\mathbf{q}\\|_1)`.
    """
    row = (p / T.sum(-1).clamp_min(torch.finfo(T.dtype).tiny)).clamp(max=1.0)
    T = T * row.unsqueeze(-1)
    col = (q / T.sum(-2).clamp_min(torch.finfo(T.dtype).tiny)).clamp(max=1.0)
    T = T * col.unsqueeze(-2)
    # non-negative after the scale-down; clamp the rounding noise, or an underflowed zero entry turns
    # negative and the next proximal step takes its log
    err_r, err_c = (p - T.sum(-1)).clamp_min(0.0), (q - T.sum(-2)).clamp_min(0.0)
    mass = err_r.sum(-1, keepdim=True).clamp_min(torch.finfo(T.dtype).tiny)
    return T + err_r.unsqueeze(-1) * err_c.unsqueeze(-2) / mass.unsqueeze(-1)
