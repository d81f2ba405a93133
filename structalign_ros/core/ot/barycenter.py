r"""GW and fused-GW barycenters of M structures with weights on the simplex.

.. math::
    \mathbf{C}^* = \arg\min_{\mathbf{C}} \sum_{m=1}^M \lambda_m \mathrm{GW}(\mathbf{C}, \mathbf{K}_m)
    \qquad (\text{fused: } \min_{\mathbf{X}, \mathbf{C}} \sum_m \lambda_m \mathrm{FGW}_\alpha((\mathbf{X},
    \mathbf{C}), (\mathbf{Y}_m, \mathbf{K}_m)))

Block-coordinate descent (Peyré et al. 2016; Vayer et al. 2019): a few warm-started proximal GW steps on
all M plans at once (one batched solve, not a loop over modalities), then the closed-form square-loss
updates
:math:`\mathbf{C} = \sum_m \lambda_m \mathbf{T}_m \mathbf{K}_m \mathbf{T}_m^\top / \mathbf{p}\mathbf{p}^\top`
and :math:`\mathbf{X} = \sum_m \lambda_m \mathbf{T}_m \mathbf{Y}_m / \mathbf{p}`.

Starts (``T0``): ``"identity"`` is the λ-weighted mean with identity plans, the exact block optimum
when the M structures describe the same paired samples (UniOMA's batches); ``"product"`` starts the
plans at :math:`\mathbf{p}\mathbf{q}_m^\top`, the better start for unpaired inputs. The default
``"auto"`` runs both where the identity is feasible (N == n and every q_m == p), batched as 2M plans,
and keeps the lower objective, dropping a start that falls :data:`RACE_MARGIN` times behind the
best after a round (so paired inputs pay for one round of the product start, not twenty); otherwise
the product start alone. ``epsilon`` is relative to the
problem's scale (proximal solver); 0.1 suits both starts (from the product start it reached lower
objectives than 0.01 or 0.03 on random unpaired kernels, see docs/OT.md).
Zero entries of p or q_m give exactly zero rows/columns of the plans (and zero rows and columns of
the barycenter where p is zero).

The returned barycenter is recomputed from the final plans with autograd on, so it is differentiable in
λ and in the structures (and features) with the plans held fixed.
"""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

import torch

from ._base import (
    as_float,
    check_count,
    check_finite,
    check_number,
    compute_dtype,
    equal_mass,
    marginal,
    plan_like,
    simplex,
    warn_not_converged,
)
from ._solver import SolverOptions, identity_feasible, initial_plan, solve_plan
from .fgw import fgw_value
from .gw import Pair, gw_gradient, gw_value, problem_scale

# With several starts (T0="auto"), a start whose objective exceeds the best start's by this factor after
# a round is stopped: measured after one round, the product start sat 5.3-5.4x above the identity's
# objective on paired kernels (which it never caught up with in 20 rounds) and 0.8-1.4x of it on
# unpaired ones (where it ends 2-3x lower); see docs/OT.md.
RACE_MARGIN = 3.0


class Barycenter(NamedTuple):
    C: torch.Tensor  # (N, N) structure
    X: torch.Tensor | None  # (N, d) features (fused barycenter only)
    plans: torch.Tensor  # (M, N, n) coupling of the barycenter with each input
    objective: torch.Tensor  # () sum_m lambda_m (F)GW(barycenter, input m) at those plans
    n_iter: int


def gw_barycenter(
    Ks: torch.Tensor,
    lambdas: torch.Tensor,
    *,
    p: torch.Tensor | None = None,
    qs: torch.Tensor | None = None,
    init_C: torch.Tensor | None = None,
    T0: torch.Tensor | str | None = "auto",
    epsilon: float = 0.1,
    solver: str = "proximal",
    max_iter: int = 20,
    tol: float = 1e-6,
    gw_steps: int = 5,
    inner_max_iter: int = 200,
) -> Barycenter:
    """GW barycenter of M structure matrices of equal size.

    Args (everything after ``lambdas`` by keyword only):
        Ks: (M, n, n) structure matrices (kernels), M >= 1.
        lambdas: (M,) weights on the simplex (non-negative, summing to 1; checked).
        p: (N,) barycenter weights, uniform if None. N = n unless ``init_C`` says otherwise.
        qs: (M, n) or (n,) weights of the inputs, uniform if None; each of the mass of ``p``.
        init_C: (N, N) start; the λ-weighted mean of ``Ks`` if None.
        T0: start of the plans: ``"auto"``/None (identity and product starts where the identity is
            feasible, else product), ``"identity"`` (paired samples), ``"product"`` or (M, N, n).
        epsilon: proximal step regularisation, relative to the problem's scale (mass × max|C|²).
        solver: ``"proximal"``, ``"entropic"``, or ``"pot"`` (POT's ``gromov_barycenters``, CPU).
        max_iter: block-coordinate rounds; tol: stop when the objective improves by less (relative).
        gw_steps: warm-started GW steps per round; inner_max_iter: Sinkhorn iterations per step.

    Returns:
        :class:`Barycenter` with ``X=None``.
    """
    options = SolverOptions(
        epsilon=epsilon, solver=solver, max_iter=max_iter, tol=tol, inner_max_iter=inner_max_iter
    )
    return _barycenter(Ks, lambdas, p=p, qs=qs, init_C=init_C, T0=T0, gw_steps=gw_steps, options=options)


def fgw_barycenter(
    Ys: torch.Tensor,
    Ks: torch.Tensor,
    lambdas: torch.Tensor,
    *,
    alpha: float = 0.5,
    p: torch.Tensor | None = None,
    qs: torch.Tensor | None = None,
    init_C: torch.Tensor | None = None,
    init_X: torch.Tensor | None = None,
    T0: torch.Tensor | str | None = "auto",
    epsilon: float = 0.1,
    max_iter: int = 20,
    tol: float = 1e-6,
    gw_steps: int = 5,
    inner_max_iter: int = 200,
) -> Barycenter:
    """Fused-GW barycenter (features and structure), the latent mixer of OTM.

    Args (everything after ``lambdas`` by keyword only):
        Ys: (M, n, d) features of each input (e.g. per-modality latent codes in a shared space).
        Ks: (M, n, n) structures; alpha: structure weight in [0, 1]; feature cost is squared Euclidean.
        init_X: (N, d) start; the λ-weighted mean of ``Ys`` if None. Other arguments as in
            :func:`gw_barycenter` (proximal solver).

    Returns:
        :class:`Barycenter` with features ``X`` (N, d).
    """
    alpha = check_number("alpha", alpha, strict=False)
    if alpha > 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    options = SolverOptions(
        epsilon=epsilon, solver="proximal", max_iter=max_iter, tol=tol, inner_max_iter=inner_max_iter
    )
    return _barycenter(
        Ks,
        lambdas,
        Ys=Ys,
        alpha=alpha,
        p=p,
        qs=qs,
        init_C=init_C,
        init_X=init_X,
        T0=T0,
        gw_steps=gw_steps,
        options=options,
    )


def _validate(Ks, lambdas, *, Ys, init_C, init_X, gw_steps):
    Ks = as_float(Ks, "Ks")
    if Ks.dim() != 3 or Ks.shape[-1] != Ks.shape[-2]:
        raise ValueError(f"Ks must be (M, n, n), got {tuple(Ks.shape)}")
    M, n, _ = Ks.shape
    if M == 0 or n == 0:
        raise ValueError(f"Ks is empty (shape {tuple(Ks.shape)}): need M >= 1 inputs of n >= 1 points")
    lambdas = simplex(lambdas, M)
    check_finite(Ks=Ks)
    if Ys is not None:
        Ys = as_float(Ys, "Ys")
        if Ys.dim() != 3 or Ys.shape[:2] != (M, n) or Ys.shape[-1] == 0:
            raise ValueError(f"Ys must be ({M}, {n}, d) to match Ks, got {tuple(Ys.shape)}")
        check_finite(Ys=Ys)
    if init_C is not None:
        init_C = as_float(init_C, "init_C")
        if init_C.dim() != 2 or init_C.shape[0] != init_C.shape[1] or init_C.shape[0] == 0:
            raise ValueError(f"init_C must be (N, N), got {tuple(init_C.shape)}")
        check_finite(init_C=init_C)
    if init_X is not None:
        init_X = as_float(init_X, "init_X")
        d = None if Ys is None else Ys.shape[-1]
        if init_X.dim() != 2 or (d is not None and init_X.shape[-1] != d):
            raise ValueError(f"init_X must be (N, {d}), got {tuple(init_X.shape)}")
        check_finite(init_X=init_X)
    check_count("gw_steps", gw_steps)
    return Ys, Ks, lambdas, init_C, init_X


def _barycenter(
    Ks: torch.Tensor,
    lambdas: torch.Tensor,
    *,
    p: torch.Tensor | None,
    qs: torch.Tensor | None,
    init_C: torch.Tensor | None,
    T0: torch.Tensor | str | None,
    gw_steps: int,
    options: SolverOptions,
    Ys: torch.Tensor | None = None,
    alpha: float = 1.0,
    init_X: torch.Tensor | None = None,
) -> Barycenter:
    """Block-coordinate descent: ``options.max_iter`` rounds of ``gw_steps`` GW steps and the closed-form
    updates, stopping when the objective improves by less than ``options.tol`` (relative). The GW
    barycenter, or the fused one when features ``Ys`` are given."""
    Ys, Ks, lambdas, init_C, init_X = _validate(
        Ks, lambdas, Ys=Ys, init_C=init_C, init_X=init_X, gw_steps=gw_steps
    )
    M, n, _ = Ks.shape
    dt = compute_dtype(Ks, lambdas)
    K, lam = Ks.detach().to(dt), lambdas.detach().to(dt)
    Y = None if Ys is None else Ys.detach().to(dt)
    N = n if init_C is None else init_C.shape[-1]
    if init_X is not None and init_X.shape[0] != N:
        raise ValueError(f"init_X has {init_X.shape[0]} rows, the barycenter has N={N} points")
    pN = marginal(p, 1, N, K, "p")[0]
    pM = pN.expand(M, N)
    qM = equal_mass(pM, marginal(qs, M, n, K, "qs"), "p and each of qs", dt)
    if options.solver == "pot":
        from .reference import pot_gw_barycenter

        start = None if init_C is None else init_C.detach().to(dt)
        C, T = pot_gw_barycenter(K, lam, pN, qM, start)
        return _finish(None, Ks, lambdas, pN, T, 1.0, 0)

    tried = _starts(T0, p=pM, q=qM)
    S = len(tried)
    C0 = _mean(lam, K) if init_C is None else init_C.detach().to(dt)
    X0 = None if Y is None else (_mean(lam, Y) if init_X is None else init_X.detach().to(dt))
    C = C0.expand(S, N, N)
    X = None if X0 is None else X0.expand(S, *X0.shape)
    T = torch.stack([initial_plan(t, p=pM, q=qM, solver=options.solver) for t in tried])  # (S, M, N, n)
    # the start itself is a candidate (unmixed: the proximal start carries a trace of p q^T)
    best = torch.stack([initial_plan(t, p=pM, q=qM, solver="entropic") for t in tried])
    best_obj = _objective(lam, C, X, K, Y, best, alpha)  # (S,)
    KS, pS, qS = K.repeat(S, 1, 1), pM.repeat(S, 1), qM.repeat(S, 1)
    active = torch.ones(S, dtype=torch.bool, device=K.device)
    # each round's GW steps are a fixed budget: no tolerance, no warning
    steps = replace(options, max_iter=gw_steps, tol=0.0, warn=False)
    tol = options.tol
    rounds = 0
    while rounds < options.max_iter:
        rounds += 1
        CS = C.repeat_interleave(M, 0)  # (S*M, N, N)
        gw_grad = gw_gradient(CS, KS, p=pS, q=qS)
        scale = problem_scale(Pair(CS, KS, pS, qS, False, dt))
        if X is None:
            grad = gw_grad
        else:
            feature = (1.0 - alpha) * torch.cdist(X.repeat_interleave(M, 0), Y.repeat(S, 1, 1)).square()
            grad = lambda T, feature=feature, g=gw_grad: feature + alpha * g(T)  # noqa: E731
            on = pS.unsqueeze(-1) * qS.unsqueeze(-2) > 0
            # feature already carries its weight (1 - alpha)
            scale = alpha * scale + (feature * on).amax((-2, -1))
            scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        flat = solve_plan(
            grad,
            p=pS,
            q=qS,
            start=T.reshape(S * M, N, n),
            options=steps,
            scale=scale if options.solver == "proximal" else None,
        )
        moving = active.view(S, 1, 1, 1)
        T = torch.where(moving, flat.view(S, M, N, n), T)
        C = torch.where(moving[:, 0], _structure(lam, K, T, pN), C)
        if X is not None:
            X = torch.where(moving[:, 0], _features(lam, Y, T, pN), X)
        obj = _objective(lam, C, X, K, Y, T, alpha)
        better = active & (obj < best_obj)
        improved = best_obj - obj
        best = torch.where(better.view(S, 1, 1, 1), T, best)
        best_obj = torch.where(better, obj, best_obj)
        active = active & (improved > tol * obj.abs().clamp_min(1e-12))
        # race: a start already RACE_MARGIN times worse than the best one is dropped (on paired
        # inputs the product start trails the identity's stationary point ~5x after a round)
        active = active & (obj <= RACE_MARGIN * best_obj.min())
        if not bool(active.any()):
            break
    else:
        if options.warn and bool(active.any()):
            gain = float((improved / obj.abs().clamp_min(1e-12))[active].max())
            what = "gw_barycenter" if Y is None else "fgw_barycenter"
            warn_not_converged(what, gain, tol, "raise max_iter (block-coordinate rounds).")
    return _finish(Ys, Ks, lambdas, pN, best[int(best_obj.argmin())], alpha, rounds)


def _starts(T0, *, p: torch.Tensor, q: torch.Tensor) -> list[torch.Tensor | str]:
    """The starts ``T0`` stands for (``"auto"``: identity where feasible, and product), for the (M, N)
    barycenter weights ``p`` and (M, n) input weights ``q``."""
    (M, N), n = p.shape, q.shape[-1]
    if T0 is None or (isinstance(T0, str) and T0 == "auto"):
        return ["identity", "product"] if N == n and identity_feasible(p, q) else ["product"]
    if isinstance(T0, str):
        if T0 not in ("identity", "product"):
            raise ValueError(f"T0 must be 'auto', 'identity', 'product' or a tensor, got {T0!r}")
        return [T0]
    return [plan_like(T0, "T0", M, N, n, p)[0]]


def _mean(lam: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    return torch.tensordot(lam, A, dims=([0], [-3]))


def _divide(A: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """A / w with 0 where w is 0 (points of zero mass have no structure or features)."""
    return torch.where(w > 0, A / torch.where(w > 0, w, 1.0), 0.0)


def _structure(lam: torch.Tensor, K: torch.Tensor, T: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Square-loss structure update: sum_m lambda_m T_m K_m T_m^T / p p^T, (..., N, N)."""
    return _divide(_mean(lam, T @ K @ T.transpose(-1, -2)), p.unsqueeze(-1) * p.unsqueeze(-2))


def _features(lam: torch.Tensor, Y: torch.Tensor, T: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Squared-Euclidean feature update: sum_m lambda_m T_m Y_m / p, (..., N, d)."""
    return _divide(_mean(lam, T @ Y), p.unsqueeze(-1))


def _objective(
    lam: torch.Tensor,
    C: torch.Tensor,
    X: torch.Tensor | None,
    K: torch.Tensor,
    Y: torch.Tensor | None,
    T: torch.Tensor,
    alpha: float,
) -> torch.Tensor:
    """sum_m lambda_m (F)GW(C, K_m) at plans T: (S,) for C (S, N, N) and T (S, M, N, n), or ()."""
    Cm = C.unsqueeze(-3).expand(*T.shape[:-2], C.shape[-1], C.shape[-1])
    Km = K.expand(*T.shape[:-2], *K.shape[-2:])
    if X is None:
        return (lam * gw_value(Cm, Km, T)).sum(-1)
    Xm = X.unsqueeze(-3).expand(*T.shape[:-2], *X.shape[-2:])
    feature = torch.cdist(Xm, Y.expand(*T.shape[:-2], *Y.shape[-2:])).square()
    return (lam * fgw_value(feature, Cm, Km, T, alpha)).sum(-1)


def _finish(
    Ys: torch.Tensor | None,
    Ks: torch.Tensor,
    lambdas: torch.Tensor,
    p: torch.Tensor,
    T: torch.Tensor,
    alpha: float,
    n_iter: int,
) -> Barycenter:
    """Recompute the barycenter from fixed plans with autograd on (differentiable in λ, Ks, Ys)."""
    dt = p.dtype
    T = T.detach()
    lam, K = lambdas.to(dt), Ks.to(dt)
    Y = None if Ys is None else Ys.to(dt)
    C = _structure(lam, K, T, p)
    X = None if Y is None else _features(lam, Y, T, p)
    objective = _objective(lam, C, X, K, Y, T, alpha)
    out = Ks.dtype if Ks.dtype.is_floating_point else torch.float64
    return Barycenter(C.to(out), None if X is None else X.to(out), T.to(out), objective.to(out), n_iter)
