import pytest
import torch

from structalign_ros.core.ot import OTConvergenceWarning, OTNumericalWarning
from structalign_ros.core.ot._solver import initial_plan, round_to_coupling, solve_plan


def _marginals(n=10):
    p = torch.full((1, n), 1.0 / n, dtype=torch.float64)
    return p, p.clone()


def test_a_nan_gradient_mid_solve_returns_the_last_finite_iterate_and_warns():
    p, q = _marginals()
    M = torch.rand(1, 10, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    calls = []

    def grad(T):
        calls.append(T.clone())
        return M if len(calls) <= 7 else torch.full_like(M, float("nan"))

    with pytest.warns(OTNumericalWarning, match="Increase epsilon"):
        T = solve_plan(grad, p, q, initial_plan(None, p, q, "proximal"), 0.05, max_iter=50, check_every=5)
    assert torch.isfinite(T).all()
    torch.testing.assert_close(T.sum(-1), p, rtol=0, atol=1e-15)
    # the last iterate that passed a check is the one after step 5 (the input of step 6), made feasible
    torch.testing.assert_close(T, round_to_coupling(calls[5], p, q), atol=1e-15, rtol=0)


def test_stopping_at_max_iter_warns_with_the_knob():
    p, q = _marginals()
    M = torch.rand(1, 10, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with pytest.warns(OTConvergenceWarning, match="raise max_iter"):
        solve_plan(lambda T: M, p, q, initial_plan(None, p, q, "proximal"), 0.05, max_iter=2, tol=1e-12)


def test_identity_start_needs_paired_marginals():
    p = torch.full((1, 4), 0.25, dtype=torch.float64)
    q = torch.tensor([[0.1, 0.2, 0.3, 0.4]], dtype=torch.float64)
    with pytest.raises(ValueError, match="paired"):
        initial_plan("identity", p, q, "proximal")
    T = initial_plan("identity", p, p, "proximal")
    assert (T > 0).all(), "a proximal start must be strictly positive"
    torch.testing.assert_close(T.sum(-1), p)
