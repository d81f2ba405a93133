"""Shapes, dtypes and warnings shared by the OT solvers."""

from __future__ import annotations

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


def precision_floor(tol: float, dtype: torch.dtype) -> float:
    """``tol`` raised to what ``dtype`` can resolve, so float32 solves stop instead of spinning."""
    return max(tol, 100.0 * torch.finfo(dtype).eps)


def batched(x: torch.Tensor, core_ndim: int) -> tuple[torch.Tensor, bool]:
    """Add a leading batch dimension when ``x`` has only its core dimensions."""
    if x.dim() == core_ndim:
        return x.unsqueeze(0), True
    if x.dim() != core_ndim + 1:
        raise ValueError(f"expected {core_ndim} or {core_ndim + 1} dims, got shape {tuple(x.shape)}")
    return x, False


def marginal(w: torch.Tensor | None, batch: int, n: int, like: torch.Tensor) -> torch.Tensor:
    """Histogram of shape (B, n): uniform when ``w`` is None, broadcast when unbatched."""
    if w is None:
        return torch.full((batch, n), 1.0 / n, dtype=like.dtype, device=like.device)
    w = w.to(dtype=like.dtype, device=like.device)
    if w.dim() == 1:
        w = w.unsqueeze(0).expand(batch, n)
    if w.shape != (batch, n):
        raise ValueError(f"histogram of shape {tuple(w.shape)} does not match (B={batch}, n={n})")
    return w


def check_finite(**tensors: torch.Tensor) -> None:
    """Reject NaN/Inf inputs with the argument's name: no solver can make sense of them."""
    for name, x in tensors.items():
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or Inf")
