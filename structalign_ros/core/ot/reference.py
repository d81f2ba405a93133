"""POT's exact solvers behind the ``solver="pot"`` option: reference values and small CPU problems.

POT solves one problem at a time on the CPU (its exact GW calls a network-simplex EMD per step), so
these loop over the batch and move data to the host and back. Not for the training hot path.
"""

from __future__ import annotations

import numpy as np
import torch


def _np(x: torch.Tensor):
    return x.detach().cpu().double().numpy()


def pot_gw_plans(
    C1: torch.Tensor, C2: torch.Tensor, p: torch.Tensor, q: torch.Tensor, T0: torch.Tensor
) -> torch.Tensor:
    """(B, n, m) exact-solver GW plans (conditional gradient from ``T0``)."""
    import ot

    plans = [
        ot.gromov.gromov_wasserstein(_np(a), _np(b), _np(pa), _np(qb), G0=_np(t), loss_fun="square_loss")
        for a, b, pa, qb, t in zip(C1, C2, p, q, T0, strict=True)
    ]
    return torch.as_tensor(np.stack(plans), dtype=C1.dtype, device=C1.device)


def pot_fgw_plans(
    M: torch.Tensor,
    C1: torch.Tensor,
    C2: torch.Tensor,
    p: torch.Tensor,
    q: torch.Tensor,
    alpha: float,
    T0: torch.Tensor,
) -> torch.Tensor:
    """(B, n, m) exact-solver fused GW plans."""
    import ot

    plans = [
        ot.gromov.fused_gromov_wasserstein(
            _np(m), _np(a), _np(b), _np(pa), _np(qb), G0=_np(t), alpha=alpha, loss_fun="square_loss"
        )
        for m, a, b, pa, qb, t in zip(M, C1, C2, p, q, T0, strict=True)
    ]
    return torch.as_tensor(np.stack(plans), dtype=C1.dtype, device=C1.device)


def pot_gw_barycenter(
    K: torch.Tensor,
    lambdas: torch.Tensor,
    p: torch.Tensor,
    qs: torch.Tensor,
    init_C: torch.Tensor | None,
    max_iter: int = 20,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """POT's ``gromov_barycenters`` (exact GW per block step): the (N, N) barycenter and (M, N, n) plans.

    ``max_iter`` is kept small on purpose: POT's block iterations cycle between plans on typical
    kernels instead of meeting its tolerance (see docs/OT.md), so more rounds only cost time.
    """
    import ot

    N = p.shape[0]
    C, log = ot.gromov.gromov_barycenters(
        N,
        [_np(k) for k in K],
        [_np(q) for q in qs],
        _np(p),
        _np(lambdas).tolist(),
        loss_fun="square_loss",
        max_iter=max_iter,
        tol=1e-9,
        init_C=None if init_C is None else _np(init_C),
        random_state=seed,
        log=True,
    )
    plans = torch.as_tensor(
        np.stack(log["T"]), dtype=K.dtype, device=K.device
    )  # (M, N, n): rows = barycenter
    return torch.as_tensor(C, dtype=K.dtype, device=K.device), plans
