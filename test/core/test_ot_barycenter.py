import warnings

import ot
import pytest
import torch
from ot_data import paired_kernels

from structalign_ros.core.ot import OTNumericalWarning, fgw_barycenter, gw_barycenter, gw_value
from structalign_ros.core.ot._solver import round_to_coupling


def _weights(M):
    w = torch.arange(1, M + 1, dtype=torch.float64)
    return w / w.sum()


def _objective(C, K, plans, lam):
    return float((lam * gw_value(C.expand(K.shape[0], -1, -1), K, plans)).sum())


@pytest.mark.parametrize("seed", [0, 1])
def test_objective_beats_pot_and_the_weighted_mean(seed):
    K, lam = paired_kernels(20, 3, seed=seed, noise=0.2), _weights(3)
    ours = gw_barycenter(K, lam)
    ref = gw_barycenter(K, lam, solver="pot")
    mean = torch.tensordot(lam, K, dims=1)
    n = K.shape[-1]
    identity = torch.eye(n, dtype=torch.float64).expand(3, n, n) / n
    assert float(ours.objective) <= float(ref.objective) + 1e-6
    assert float(ours.objective) <= _objective(mean, K, identity, lam) + 1e-12
    # the reported objective is the true quadratic form of the returned, feasible plans
    assert float(ours.objective) == pytest.approx(_objective(ours.C, K, ours.plans, lam), rel=1e-12)
    torch.testing.assert_close(ours.plans.sum(-1), torch.full((3, n), 1.0 / n, dtype=torch.float64))


def test_product_start_objective_is_no_worse_than_pot():
    K, lam = paired_kernels(16, 3, seed=2, noise=0.2), _weights(3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OTNumericalWarning)  # regression: rounding noise once gave NaN
        ours = gw_barycenter(K, lam, T0="product", epsilon=0.01)
    C = ot.gromov.gromov_barycenters(
        16, list(K.numpy()), None, None, lam.tolist(), max_iter=20, random_state=0
    )
    pot = sum(lam[m] * ot.gromov.gromov_wasserstein2(K[m].numpy(), C) for m in range(3))
    assert float(ours.objective) <= float(pot) + 1e-6


def test_differentiable_in_lambda_and_kernels_with_plans_fixed():
    K = paired_kernels(12, 3, seed=3).requires_grad_(True)
    logits = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    lam = torch.softmax(logits, 0)
    bary = gw_barycenter(K, lam)
    E = torch.randn(12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    (bary.C * E).sum().backward()
    T = bary.plans.detach()
    pp = torch.full((12, 12), 1.0 / 144, dtype=torch.float64)
    per_modality = torch.stack([((T[m] @ K[m].detach() @ T[m].T / pp) * E).sum() for m in range(3)])
    jac = torch.autograd.functional.jacobian(lambda z: torch.softmax(z, 0), logits.detach())
    torch.testing.assert_close(logits.grad, jac.T @ per_modality)
    assert K.grad is not None and torch.isfinite(K.grad).all() and K.grad.abs().sum() > 0


def test_fused_barycenter_improves_on_the_mean_and_beats_pot_on_paired_features():
    K = paired_kernels(15, 3, seed=4, noise=0.2)
    g = torch.Generator().manual_seed(4)
    Z = torch.randn(15, 2, dtype=torch.float64, generator=g)
    Y = Z + 0.3 * torch.randn(
        3, 15, 2, dtype=torch.float64, generator=g
    )  # per-modality codes of shared latents
    lam = _weights(3)
    bary = fgw_barycenter(Y, K, lam, alpha=0.5, T0="product", epsilon=0.01)
    n = 15
    identity = torch.eye(n, dtype=torch.float64).expand(3, n, n) / n
    Xm, Cm = torch.tensordot(lam, Y, dims=1), torch.tensordot(lam, K, dims=1)
    feat = torch.cdist(Xm.expand(3, -1, -1), Y).square()
    mean_obj = float(
        (
            lam * (0.5 * (feat * identity).sum((-2, -1)) + 0.5 * gw_value(Cm.expand(3, -1, -1), K, identity))
        ).sum()
    )
    assert bary.X.shape == (15, 2) and bary.C.shape == (15, 15)
    assert float(fgw_barycenter(Y, K, lam, alpha=0.5).objective) <= mean_obj + 1e-12
    X, C = ot.gromov.fgw_barycenters(
        15, list(Y.numpy()), list(K.numpy()), None, lam.tolist(), alpha=0.5, random_state=0
    )
    pot = sum(
        lam[m] * ot.gromov.fused_gromov_wasserstein2(ot.dist(X, Y[m].numpy()), C, K[m].numpy(), alpha=0.5)
        for m in range(3)
    )
    assert float(bary.objective) <= float(pot) + 1e-6


def test_bad_shapes_are_rejected():
    K = paired_kernels(8, 3)
    with pytest.raises(ValueError, match="lambdas"):
        gw_barycenter(K, torch.ones(2, dtype=torch.float64) / 2)
    with pytest.raises(ValueError, match="Ks must be"):
        gw_barycenter(K[0], torch.ones(3, dtype=torch.float64) / 3)


def test_rounding_gives_a_nonnegative_exact_coupling_even_with_underflowed_entries():
    g = torch.Generator().manual_seed(9)
    T = torch.rand(4, 20, 20, dtype=torch.float64, generator=g) * (torch.rand(4, 20, 20, generator=g) > 0.7)
    T = T / T.sum((-2, -1), keepdim=True)  # zeros where mass underflowed; marginals off
    p = torch.full((4, 20), 1 / 20, dtype=torch.float64)
    R = round_to_coupling(T, p=p, q=p)
    assert (R >= 0).all() and torch.isfinite(R.log()[R > 0]).all()
    torch.testing.assert_close(R.sum(-1), p, rtol=0, atol=1e-15)
    torch.testing.assert_close(R.sum(-2), p, rtol=0, atol=1e-15)
