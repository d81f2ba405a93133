r"""GW and fused-GW barycenters of M structures with weights on the simplex.

.. math::
    \mathbf{C}^* = \arg\min_{\mathbf{C}} \sum_{m=1}^M \lambda_m \mathrm{GW}(\mathbf{C}, \mathbf{K}_m)
    \qquad (\text{fused: } \min_{\mathbf{X}, \mathbf{C}} \sum_m \lambda_m \mathrm{FGW}_\alpha((\mathbf{X},
    \mathbf{C}), (\mathbf{Y}_m, \mathbf{K}_m)))

Block-coordinate descent (Peyré et al. 2016; Vayer et al. 2019): a few warm-started proximal GW steps on
all M plans at once (one batched solve, not a loop over modalities), then the closed-form square-loss
updates
:math:`\mathbf{C} = \sum_m \lambda_m \mathbf{T}_m \mathbf{K}_m \mathbf{T}_m^\top / \mathbf{p}\mathbf{p}^\top`
and :math:`\mathbf{X} = \sum_m \lambda_m \mathbf{T}_m \mathbf{Y}_m / \mathbf{p}`. The start is the
λ-weighted mean with identity plans, which is the exact block optimum when the M structures describe
the same paired samples (UniOMA's batches), so descent starts from the best place there is.

The returned barycenter is recomputed from the final plans with autograd on, so it is differentiable in
λ and in the structures (and features) with the plans held fixed.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ._base import check_finite, compute_dtype, marginal
from ._solver import initial_plan, solve_plan
from .fgw import fgw_value
from .gw import gw_gradient, gw_value


class Barycenter(NamedTuple):
    C: torch.Tensor  # (N, N) structure
    X: torch.Tensor | None  # (N, d) features (fused barycenter only)
    plans: torch.Tensor  # (M, N, n) coupling of the barycenter with each input
    objective: torch.Tensor  # () sum_m lambda_m (F)GW(barycenter, input m) at those plans
    n_iter: int


def gw_barycenter(
    Ks: torch.Tensor,
    lambdas: torch.Tensor,
    p: torch.Tensor | None = None,
    qs: torch.Tensor | None = None,
    init_C: torch.Tensor | None = None,
    T0: torch.Tensor | str | None = "identity",
    epsilon: float = 0.1,
    solver: str = "proximal",
    max_iter: int = 20,
    tol: float = 1e-6,
    gw_steps: int = 5,
    inner_max_iter: int = 200,
) -> Barycenter:
    """GW barycenter of M structure matrices of paired (or equal-sized) batches.

    Args:
        Ks: (M, n, n) structure matrices (kernels).
        lambdas: (M,) weights on the simplex.
        p: (N,) barycenter weights, uniform if None. N = n unless ``init_C`` says otherwise.
        qs: (M, n) weights of the inputs, uniform if None.
        init_C: (N, N) start; the λ-weighted mean of ``Ks`` if None.
        T0: start of the plans: ``"identity"`` (paired samples), ``"product"`` or (M, N, n).
        epsilon: proximal step regularisation. The default suits the identity start (gentle steps from
            an already good point keep every projection accurate); use ~0.01 with ``T0="product"``.
        solver: ``"proximal"``, ``"entropic"``, or ``"pot"`` (POT's ``gromov_barycenters``, CPU).
        max_iter: block-coordinate rounds; tol: stop when the objective improves by less (relative).
        gw_steps: warm-started GW steps per round; inner_max_iter: Sinkhorn iterations per step.

    Returns:
        :class:`Barycenter` with ``X=None``.
    """
    return _barycenter(
        None,
        Ks,
        lambdas,
        1.0,
        p,
        qs,
        init_C,
        None,
        T0,
        epsilon,
        solver,
        max_iter,
        tol,
        gw_steps,
        inner_max_iter,
    )


def fgw_barycenter(
    Ys: torch.Tensor,
    Ks: torch.Tensor,
    lambdas: torch.Tensor,
    alpha: float = 0.5,
    p: torch.Tensor | None = None,
    qs: torch.Tensor | None = None,
    init_C: torch.Tensor | None = None,
    init_X: torch.Tensor | None = None,
    T0: torch.Tensor | str | None = "identity",
    epsilon: float = 0.1,
    max_iter: int = 20,
    tol: float = 1e-6,
    gw_steps: int = 5,
    inner_max_iter: int = 200,
) -> Barycenter:
    """Fused-GW barycenter (features and structure), the latent mixer of OTM.

    Args:
        Ys: (M, n, d) features of each input (e.g. per-modality latent codes in a shared space).
        Ks: (M, n, n) structures; alpha: structure weight in [0, 1]; feature cost is squared Euclidean.
        init_X: (N, d) start; the λ-weighted mean of ``Ys`` if None. Other arguments as in
            :func:`gw_barycenter` (proximal solver).

    Returns:
        :class:`Barycenter` with features ``X`` (N, d).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return _barycenter(
        Ys,
        Ks,
        lambdas,
        alpha,
        p,
        qs,
        init_C,
        init_X,
        T0,
        epsilon,
        "proximal",
        max_iter,
        tol,
        gw_steps,
        inner_max_iter,
    )


def _barycenter(
    Ys: torch.Tensor | None,
    Ks: torch.Tensor,
    lambdas: torch.Tensor,
    alpha: float,
    p: torch.Tensor | None,
    qs: torch.Tensor | None,
    init_C: torch.Tensor | None,
    init_X: torch.Tensor | None,
    T0: torch.Tensor | str | None,
    epsilon: float,
    solver: str,
    max_iter: int,
    tol: float,
    gw_steps: int,
    inner_max_iter: int,
) -> Barycenter:
    if Ks.dim() != 3 or Ks.shape[-1] != Ks.shape[-2]:
        raise ValueError(f"Ks must be (M, n, n), got {tuple(Ks.shape)}")
    M, n, _ = Ks.shape
    if lambdas.shape != (M,):
        raise ValueError(f"lambdas must be ({M},), got {tuple(lambdas.shape)}")
    check_finite(Ks=Ks, lambdas=lambdas, **({} if Ys is None else {"Ys": Ys}))
    dt = compute_dtype(Ks, lambdas)
    K, lam = Ks.detach().to(dt), lambdas.detach().to(dt)
    Y = None if Ys is None else Ys.detach().to(dt)
    N = n if init_C is None else init_C.shape[-1]
    pN = marginal(p, 1, N, K)[0]
    pM, qM = pN.expand(M, N), marginal(qs, M, n, K)
    if solver == "pot":
        from .reference import pot_gw_barycenter

        start = None if init_C is None else init_C.detach().to(dt)
        C, T = pot_gw_barycenter(K, lam, pN, qM, start)
        return _finish(None, Ks, lambdas, pN, T, 1.0, 0)

    C = _mean(lam, K) if init_C is None else init_C.detach().to(dt)
    X = None if Y is None else (_mean(lam, Y) if init_X is None else init_X.detach().to(dt))
    T = initial_plan(T0, pM, qM, solver)
    # the start itself is a candidate (unmixed: the proximal start carries a trace of p q^T)
    best = initial_plan(T0, pM, qM, "entropic")
    best_obj, rounds = float(_objective(lam, C, X, K, Y, best, alpha)), 0
    while rounds < max_iter:
        rounds += 1
        gw_grad = gw_gradient(C.expand(M, N, N), K, pM, qM)
        if X is None:
            grad = gw_grad
        else:
            feature = (1.0 - alpha) * torch.cdist(X.expand(M, N, -1), Y).square()
            grad = lambda T, feature=feature, g=gw_grad: feature + alpha * g(T)  # noqa: E731
        T = solve_plan(
            grad, pM, qM, T, epsilon, solver, gw_steps, 0.0, inner_max_iter=inner_max_iter, warn=False
        )
        C = _structure(lam, K, T, pN)
        X = None if Y is None else _features(lam, Y, T, pN)
        obj = float(_objective(lam, C, X, K, Y, T, alpha))
        improved = best_obj - obj
        if obj < best_obj:
            best, best_obj = T, obj
        if improved <= tol * max(abs(obj), 1e-12):
            break
    return _finish(Ys, Ks, lambdas, pN, best, alpha, rounds)


def _mean(lam: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    return torch.tensordot(lam, A, dims=1)


def _structure(lam: torch.Tensor, K: torch.Tensor, T: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Square-loss structure update: sum_m lambda_m T_m K_m T_m^T / p p^T, (N, N)."""
    return _mean(lam, T @ K @ T.transpose(-1, -2)) / (p.unsqueeze(-1) * p.unsqueeze(-2))


def _features(lam: torch.Tensor, Y: torch.Tensor, T: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Squared-Euclidean feature update: sum_m lambda_m T_m Y_m / p, (N, d)."""
    return _mean(lam, T @ Y) / p.unsqueeze(-1)


def _objective(
    lam: torch.Tensor,
    C: torch.Tensor,
    X: torch.Tensor | None,
    K: torch.Tensor,
    Y: torch.Tensor | None,
    T: torch.Tensor,
    alpha: float,
) -> torch.Tensor:
    Cm = C.expand(K.shape[0], -1, -1)
    if X is None:
        return (lam * gw_value(Cm, K, T)).sum()
    feature = torch.cdist(X.expand(K.shape[0], -1, -1), Y).square()
    return (lam * fgw_value(feature, Cm, K, T, alpha)).sum()


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
    out = Ks.dtype
    return Barycenter(C.to(out), None if X is None else X.to(out), T.to(out), objective.to(out), n_iter)
