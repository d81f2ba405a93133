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

Everything stays on the input's device; the only host synchronisations are the convergence checks
every ``check_every`` steps.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._base import precision_floor, warn_non_finite, warn_not_converged
from .sinkhorn import sinkhorn_log

SOLVERS = ("proximal", "entropic")

# Mass a proximal start keeps off a sparse initial plan: KL steps can never move mass onto entries
# that start at exactly zero, so a permutation start is mixed with a little of p q^T.
SPARSE_START_MIX = 1e-5


def initial_plan(
    T0: torch.Tensor | str | None, p: torch.Tensor, q: torch.Tensor, solver: str
) -> torch.Tensor:
    """Starting coupling (B, n, m).

    ``"product"`` (or None) is :math:`\\mathbf{p}\\mathbf{q}^\\top`; ``"identity"`` is the
    diagonal coupling of paired samples (requires n == m and p == q), the far better start when row i of
    both matrices describes the same sample; a tensor is used as given.
    """
    product = p.unsqueeze(-1) * q.unsqueeze(-2)
    if T0 is None or (isinstance(T0, str) and T0 == "product"):
        return product
    if isinstance(T0, str):
        if T0 != "identity":
            raise ValueError(f"T0 must be 'product', 'identity' or a tensor, got {T0!r}")
        if p.shape != q.shape or not torch.allclose(p, q):
            raise ValueError("T0='identity' needs paired samples: equal sizes and p == q")
        T = torch.diag_embed(p)
    else:
        T = T0.to(dtype=p.dtype, device=p.device).expand_as(product)
    if solver == "proximal":
        T = (1.0 - SPARSE_START_MIX) * T + SPARSE_START_MIX * product
    return T


def solve_plan(
    grad: Callable[[torch.Tensor], torch.Tensor],
    p: torch.Tensor,
    q: torch.Tensor,
    T0: torch.Tensor,
    epsilon: float,
    solver: str = "proximal",
    max_iter: int = 100,
    tol: float = 1e-7,
    inner_max_iter: int = 200,
    inner_tol: float = 1e-7,
    check_every: int = 5,
    what: str = "gromov_wasserstein",
    warn: bool = True,
) -> torch.Tensor:
    """Mirror descent over couplings.

    Args:
        grad: T (B, n, m) -> gradient of the objective at T, (B, n, m).
        p, q: (B, n), (B, m) marginals.
        T0: (B, n, m) feasible start, strictly positive for ``"proximal"`` (see :func:`initial_plan`).
        epsilon: step regularisation, in the units of the gradient. Proximal: smaller takes bigger steps
            but makes each projection harder. Entropic: smaller is sharper and slower.
        solver: ``"proximal"`` or ``"entropic"``.
        max_iter, tol: outer steps and the stopping threshold on max_b ||T_k+1 - T_k||_F.
        inner_max_iter, inner_tol: the Sinkhorn projection of each step.
        warn: warn when ``max_iter`` ends the loop (off for callers that take a few warm steps).

    Returns:
        (B, n, m) plan, exactly feasible.
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {(*SOLVERS, 'pot')}, got {solver!r}")
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    tol = precision_floor(tol, T0.dtype) if tol > 0 else 0.0
    T = good = T0
    log_T = T0.log() if solver == "proximal" else None
    u = v = None
    err = float("inf")
    for it in range(1, max_iter + 1):
        log_K = -grad(T) / epsilon
        if log_T is not None:
            log_K = log_K + log_T
        res = sinkhorn_log(p, q, log_K, u, v, max_iter=inner_max_iter, tol=inner_tol, warn=False)
        check = it % check_every == 0 or it == max_iter
        if check and not torch.isfinite(res.T).all():
            warn_non_finite(what, "Increase epsilon.")
            T = good
            break
        if check:
            err = float(torch.linalg.matrix_norm(res.T - T).max())
            good = res.T
        T = res.T
        if log_T is not None:
            # the duals are folded into the prior: the next projection starts from zero duals
            log_T = log_K + res.u.unsqueeze(-1) + res.v.unsqueeze(-2)
        else:
            u, v = res.u, res.v
        if err < tol:
            break
    else:
        if warn and err > tol:
            warn_not_converged(
                what, err, tol, "raise max_iter (a smaller epsilon takes bigger proximal steps)."
            )
    # Late proximal steps act like Sinkhorn at epsilon / k and may leave their projection unfinished;
    # the plan handed back is made exactly feasible.
    return round_to_coupling(T, p, q)


def round_to_coupling(T: torch.Tensor, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
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
