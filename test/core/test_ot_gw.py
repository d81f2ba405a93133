import numpy as np
import ot
import pytest
import torch
from ot.gromov._utils import gwloss, init_matrix
from ot_data import paired_kernels, rbf

from structalign_ros.core.ot import gromov_wasserstein, gromov_wasserstein2, gw_value, sinkhorn


def _pair(n=12, seed=0):
    K = paired_kernels(n, 2, seed=seed)
    return K[0], K[1]


def test_permuted_kernel_has_zero_gw_and_the_permutation_plan():
    n = 16
    K = rbf(torch.randn(n, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(1))
    T = gromov_wasserstein(K, K[perm][:, perm], epsilon=0.003)
    expected = torch.zeros(n, n, dtype=torch.float64)
    expected[perm, torch.arange(n)] = 1.0 / n
    torch.testing.assert_close(T, expected, atol=1e-6, rtol=0)
    assert float(gromov_wasserstein2(K, K[perm][:, perm], T=T)) < 1e-10


def test_value_at_a_plan_equals_pot():
    C1, C2 = _pair(seed=2)
    T = sinkhorn(None, None, torch.rand(12, 12, dtype=torch.float64), epsilon=0.1)
    p, q = T.sum(1), T.sum(0)
    constC, hC1, hC2 = init_matrix(C1.numpy(), C2.numpy(), p.numpy(), q.numpy(), "square_loss")
    ref = gwloss(constC, hC1, hC2, T.numpy())
    assert float(gw_value(C1[None], C2[None], T[None])) == pytest.approx(ref, rel=1e-10)


def test_entropic_solver_reaches_pots_entropic_fixed_point():
    C1, C2 = _pair(seed=3)
    eps = 0.05
    ours = gromov_wasserstein(C1, C2, epsilon=eps, solver="entropic", max_iter=2000, tol=1e-12)
    ref = ot.gromov.entropic_gromov_wasserstein(
        C1.numpy(), C2.numpy(), epsilon=eps, solver="PGD", max_iter=2000, tol=1e-12
    )
    # POT's own inner Sinkhorn stops at its default stopThr, so agreement is at that precision
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-6)
    ref_value = float(gw_value(C1[None], C2[None], torch.as_tensor(ref)[None]))
    assert float(gromov_wasserstein2(C1, C2, T=ours)) == pytest.approx(ref_value, rel=1e-5)


def test_envelope_gradients_match_pot_at_the_same_plan():
    C1, C2 = _pair(seed=4)
    A = C1.clone().requires_grad_(True)
    B = C2.clone().requires_grad_(True)
    ref = ot.gromov.gromov_wasserstein2(A, B)  # POT sets gradients from its own plan
    ref.backward()
    plan = ot.gromov.gromov_wasserstein(C1.numpy(), C2.numpy())
    A2 = C1.clone().requires_grad_(True)
    B2 = C2.clone().requires_grad_(True)
    ours = gromov_wasserstein2(A2, B2, T=torch.as_tensor(plan))
    ours.backward()
    assert float(ours) == pytest.approx(float(ref), rel=1e-10)
    torch.testing.assert_close(A2.grad, A.grad, rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(B2.grad, B.grad, rtol=1e-8, atol=1e-12)


def test_gradient_matches_finite_differences_of_the_resolved_value():
    """Envelope theorem: d/dC1 min_T f(C1, T) = df/dC1 at the optimal plan, checked with POT's exact
    conditional-gradient solver re-run from that plan on each perturbed problem."""
    C1, C2 = _pair(n=10, seed=5)
    plan = ot.gromov.gromov_wasserstein(C1.numpy(), C2.numpy(), G0=np.eye(10) / 10)
    A = C1.clone().requires_grad_(True)
    gromov_wasserstein2(A, C2, T=torch.as_tensor(plan)).backward()
    E = torch.randn(10, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    E = (E + E.T) / 2
    h = 1e-5

    def resolved(C):
        return float(ot.gromov.gromov_wasserstein2(C.numpy(), C2.numpy(), G0=plan))

    fd = (resolved(C1 + h * E) - resolved(C1 - h * E)) / (2 * h)
    assert fd == pytest.approx(float((A.grad * E).sum()), rel=1e-6)


def test_identity_start_keeps_paired_samples_matched():
    K = paired_kernels(30, 1, seed=6)[0]
    E = torch.randn(30, 30, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    noisy = K + 1e-3 * (E + E.T)
    T = gromov_wasserstein(K, noisy, epsilon=0.01, T0="identity")
    torch.testing.assert_close(T, torch.eye(30, dtype=torch.float64) / 30, atol=1e-6, rtol=0)


def test_batched_equals_looped():
    K = paired_kernels(12, 4, seed=7)
    C1, C2 = K[:2], K[2:]
    T = gromov_wasserstein(C1, C2, epsilon=0.01, max_iter=30)
    for i in range(2):
        torch.testing.assert_close(T[i], gromov_wasserstein(C1[i], C2[i], epsilon=0.01, max_iter=30))
    values = gromov_wasserstein2(C1, C2, epsilon=0.01, max_iter=30)
    assert values.shape == (2,)


def test_pot_solver_option_returns_pots_plan():
    C1, C2 = _pair(seed=8)
    T = gromov_wasserstein(C1, C2, solver="pot")
    np.testing.assert_allclose(T.numpy(), ot.gromov.gromov_wasserstein(C1.numpy(), C2.numpy()), atol=1e-12)


@pytest.mark.parametrize(
    "C1, C2",
    [
        (torch.ones(8, 8), torch.ones(8, 8)),  # constant kernels
        (torch.zeros(8, 8), torch.zeros(8, 8)),  # zero kernels
        (rbf(torch.zeros(8, 2)), rbf(torch.randn(8, 2))),  # duplicated points
        (rbf(torch.randn(8, 2)).half(), rbf(torch.randn(8, 2)).half()),  # float16
    ],
)
def test_degenerate_inputs_give_finite_values_and_gradients(C1, C2):
    A = C1.clone().requires_grad_(True)
    B = C2.clone().requires_grad_(True)
    value = gromov_wasserstein2(A, B)
    value.float().backward()
    assert torch.isfinite(value) and value.dtype == C1.dtype
    assert torch.isfinite(A.grad).all() and torch.isfinite(B.grad).all()


def test_non_finite_input_is_rejected():
    C1, C2 = _pair()
    C2[0, 1] = float("inf")
    with pytest.raises(ValueError, match="C2 contains NaN or Inf"):
        gromov_wasserstein(C1, C2)
