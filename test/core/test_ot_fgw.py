import ot
import pytest
import torch
from ot_data import paired_kernels

from structalign_ros.core.ot import (
    fused_gromov_wasserstein,
    fused_gromov_wasserstein2,
    gromov_wasserstein2,
)


def _problem(n=12, seed=0):
    K = paired_kernels(n, 2, seed=seed)
    g = torch.Generator().manual_seed(seed)
    M = torch.cdist(
        torch.randn(n, 3, dtype=torch.float64, generator=g),
        torch.randn(n, 3, dtype=torch.float64, generator=g),
    )
    return M.square() / M.square().max(), K[0], K[1]


def test_alpha_zero_converges_to_exact_ot():
    """Proximal steps on the linear problem are Sinkhorn at epsilon / k: the gap to the exact OT value
    (POT's network simplex) shrinks with k, and every returned plan is exactly feasible."""
    M, C1, C2 = _problem(seed=1)
    exact = ot.emd2([], [], M.numpy())
    uniform = torch.full((12,), 1 / 12, dtype=torch.float64)
    gaps = []
    for steps in (5, 20):
        T = fused_gromov_wasserstein(M, C1, C2, alpha=0.0, epsilon=0.02, max_iter=steps, inner_max_iter=5000)
        torch.testing.assert_close(T.sum(1), uniform, rtol=0, atol=1e-15)
        torch.testing.assert_close(T.sum(0), uniform, rtol=0, atol=1e-15)
        gaps.append(float((T * M).sum()) - exact)
    assert 0 <= gaps[1] < gaps[0] and gaps[1] < 1e-4


def test_alpha_one_is_gw():
    M, C1, C2 = _problem(seed=2)
    fused = fused_gromov_wasserstein2(M, C1, C2, alpha=1.0, T0="identity")
    assert float(fused) == pytest.approx(float(gromov_wasserstein2(C1, C2, T0="identity")), rel=1e-12)


def test_value_and_gradients_match_pot_at_pots_plan():
    M, C1, C2 = _problem(seed=3)
    tensors = [x.clone().requires_grad_(True) for x in (M, C1, C2)]
    ref = ot.gromov.fused_gromov_wasserstein2(*tensors, alpha=0.4)
    ref.backward()
    plan = ot.gromov.fused_gromov_wasserstein(M.numpy(), C1.numpy(), C2.numpy(), alpha=0.4)
    mine = [x.clone().requires_grad_(True) for x in (M, C1, C2)]
    ours = fused_gromov_wasserstein2(*mine, alpha=0.4, T=torch.as_tensor(plan))
    ours.backward()
    assert float(ours) == pytest.approx(float(ref), rel=1e-10)
    for a, b in zip(mine, tensors, strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-8, atol=1e-12)


def test_bad_alpha_is_rejected():
    M, C1, C2 = _problem()
    with pytest.raises(ValueError, match="alpha"):
        fused_gromov_wasserstein(M, C1, C2, alpha=1.5)
