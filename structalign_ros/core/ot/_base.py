"""Shapes, dtypes, input checks and warnings shared by the OT solvers.

Every public solver validates its arguments here, so a bad input raises ``ValueError`` or
``TypeError`` naming the argument instead of a raw torch error or a silent wrong answer:

- tensors only; complex dtypes are refused; integer and bool tensors are cast to float64;
- non-empty, finite structures of the right shape; batch sizes equal or 1 (broadcast);
- weights finite, non-negative, of positive mass, and of equal mass on both sides (to a relative
  :data:`MASS_RTOL`); the second histogram is then rescaled to the first one's mass exactly, so
  returned plans are exact couplings;
- barycenter weights λ on the simplex (to the same tolerance).
"""

from __future__ import annotations

import math
import warnings

import torch


class OTConvergenceWarning(UserWarning):
    """A solver stopped at ``max_iter`` before reaching ``tol``."""


class OTNumericalWarning(UserWarning):
    """A solver met NaN/Inf and returned its last finite iterate."""


def warn_not_converged(what: str, err: float, tol: float, knob: str) -> None:
    warnings.warn(
        f"{what} did not converge (error {err:.3g} > tol {tol:.3g}); {knob}",
        OTConvergenceWarning,
        stacklevel=3,
    )


def warn_non_finite(what: str, knob: str) -> None:
    warnings.warn(
        f"{what} produced NaN/Inf; returning the last finite iterate. {knob}",
        OTNumericalWarning,
        stacklevel=3,
    )


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32: half precision is too coarse for Sinkhorn."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def result_dtype(x: torch.Tensor) -> torch.dtype:
    """Dtype of the results: the input's if floating, float64 for inputs that were cast."""
    return x.dtype if x.dtype.is_floating_point else torch.float64


def precision_floor(tol: float, dtype: torch.dtype) -> float:
    """``tol`` raised to what ``dtype`` can resolve, so float32 solves stop instead of spinning."""
    return max(tol, 100.0 * torch.finfo(dtype).eps)


def mass_rtol(dtype: torch.dtype) -> float:
    """Relative tolerance on equal masses and on λ summing to one."""
    return 1e-6 if dtype == torch.float64 else 1e-4


def as_float(x: object, name: str) -> torch.Tensor:
    """``x`` as a floating tensor: integers and bools cast to float64, anything else refused."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.is_complex():
        raise TypeError(f"{name} must be real, got {x.dtype}")
    if not x.dtype.is_floating_point:
        x = x.to(torch.float64)
    return x


def check_finite(**tensors: torch.Tensor) -> None:
    """Reject NaN/Inf inputs with the argument's name: no solver can make sense of them."""
    for name, x in tensors.items():
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or Inf")


def check_number(name: str, value: object, low: float = 0.0, strict: bool = True) -> float:
    """A finite real > ``low`` (or >= with ``strict=False``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    ok = math.isfinite(value) and (value > low if strict else value >= low)
    if not ok:
        raise ValueError(f"{name} must be finite and {'>' if strict else '>='} {low}, got {value}")
    return float(value)


def check_count(name: str, value: object, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def batched(x: torch.Tensor, core_ndim: int, name: str = "input") -> tuple[torch.Tensor, bool]:
    """Add a leading batch dimension when ``x`` has only its core dimensions."""
    if x.dim() == core_ndim:
        return x.unsqueeze(0), True
    if x.dim() != core_ndim + 1:
        raise ValueError(f"{name} must have {core_ndim} or {core_ndim + 1} dims, got shape {tuple(x.shape)}")
    return x, False


def structure(C: object, name: str) -> tuple[torch.Tensor, bool]:
    """Validated (B, n, n) structure matrix and whether it came unbatched."""
    Cf = as_float(C, name)
    Cb, squeeze = batched(Cf, 2, name)
    if Cb.shape[-1] != Cb.shape[-2]:
        raise ValueError(f"{name} must be square, got shape {tuple(Cf.shape)}")
    if Cb.shape[-1] == 0 or Cb.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(Cf.shape)})")
    check_finite(**{name: Cb})
    return Cb, squeeze


def batch_size(**sizes: int) -> int:
    """Common batch size of arguments with batch sizes ``sizes`` (1 broadcasts)."""
    big = {k: v for k, v in sizes.items() if v != 1}
    if len(set(big.values())) > 1:
        described = ", ".join(f"{k} has {v}" for k, v in sizes.items())
        raise ValueError(f"batch sizes do not match: {described}")
    return next(iter(big.values()), 1)


def marginal(w: object, batch: int, n: int, like: torch.Tensor, name: str = "weights") -> torch.Tensor:
    """Validated histogram of shape (B, n): uniform when ``w`` is None, broadcast when unbatched."""
    if w is None:
        return torch.full((batch, n), 1.0 / n, dtype=like.dtype, device=like.device)
    w = as_float(w, name).detach()
    if w.dim() == 1:
        w = w.unsqueeze(0)
    if w.dim() != 2 or w.shape[-1] != n or w.shape[0] not in (1, batch):
        raise ValueError(f"{name} of shape {tuple(w.shape)} does not match ({n},) or (B={batch}, {n})")
    check_finite(**{name: w})
    if (w < 0).any():
        raise ValueError(f"{name} has negative entries")
    if not (w.sum(-1) > 0).all():
        raise ValueError(f"{name} has zero total mass")
    return w.to(dtype=like.dtype, device=like.device).expand(batch, n)


def equal_mass(p: torch.Tensor, q: torch.Tensor, names: str, dtype: torch.dtype) -> torch.Tensor:
    """``q`` rescaled to the mass of ``p`` after checking the masses agree (``names`` e.g. "p and q")."""
    mp, mq = p.sum(-1, keepdim=True), q.sum(-1, keepdim=True)
    gap = float(((mp - mq).abs() / mp).max())
    if gap > mass_rtol(dtype):
        raise ValueError(
            f"{names} must have equal mass: sums {mp.flatten()[:4].tolist()} and {mq.flatten()[:4].tolist()}"
        )
    return q * (mp / mq)


def simplex(lam: object, M: int, name: str = "lambdas") -> torch.Tensor:
    """Validated (M,) weights on the probability simplex."""
    lam = as_float(lam, name)
    if lam.shape != (M,):
        raise ValueError(f"{name} must be ({M},), got {tuple(lam.shape)}")
    check_finite(**{name: lam})
    if (lam < 0).any():
        raise ValueError(f"{name} must be non-negative (on the simplex), got {lam.tolist()}")
    total = float(lam.detach().sum())
    if abs(total - 1.0) > mass_rtol(lam.dtype):
        raise ValueError(f"{name} must sum to 1 (on the simplex), sums to {total:.6g}")
    return lam


def plan_like(
    T: object, name: str, batch: int, n: int, m: int, like: torch.Tensor
) -> tuple[torch.Tensor, bool]:
    """Validated (B, n, m) non-negative plan (a given ``T`` or a starting ``T0``), broadcast to ``batch``."""
    T = as_float(T, name)
    Tb, squeeze = batched(T, 2, name)
    if Tb.shape[-2:] != (n, m):
        hint = " (transposed?)" if Tb.shape[-2:] == (m, n) else ""
        raise ValueError(f"{name} must be ({n}, {m}) or (B, {n}, {m}), got {tuple(T.shape)}{hint}")
    if Tb.shape[0] not in (1, batch):
        raise ValueError(f"{name} has batch size {Tb.shape[0]}, the problem has {batch}")
    check_finite(**{name: Tb})
    if (Tb < 0).any():
        raise ValueError(f"{name} has negative entries")
    return Tb.detach().to(dtype=like.dtype, device=like.device).expand(batch, n, m), squeeze


def cost_matrix(M: object, name: str = "M") -> tuple[torch.Tensor, bool]:
    """Validated (B, n, m) cost matrix."""
    Mf = as_float(M, name)
    Mb, squeeze = batched(Mf, 2, name)
    if Mb.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(Mf.shape)})")
    check_finite(**{name: Mb})
    return Mb, squeeze


def detach(x: object) -> object:
    """``x.detach()`` for tensors, anything else unchanged (validated later, by name)."""
    return x.detach() if isinstance(x, torch.Tensor) else x
