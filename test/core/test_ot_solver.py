import dataclasses

import pytest
import torch

from structalign_ros.core.ot import OTConvergenceWarning, OTNumericalWarning, gw_barycenter
from structalign_ros.core.ot._solver import SolverOptions, initial_plan, round_to_coupling, solve_plan


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

    options = SolverOptions(epsilon=0.05, solver="proximal", max_iter=50, tol=1e-7, inner_max_iter=200)
    start = initial_plan(None, p=p, q=q, solver="proximal")
    with pytest.warns(OTNumericalWarning, match="Increase epsilon"):
        T = solve_plan(grad, p=p, q=q, start=start, options=options)
    assert torch.isfinite(T).all()
    torch.testing.assert_close(T.sum(-1), p, rtol=0, atol=1e-15)
    # the last iterate that passed a check is the one after step 5 (the input of step 6), made feasible
    torch.testing.assert_close(T, round_to_coupling(calls[5], p=p, q=q), atol=1e-15, rtol=0)


def test_stopping_at_max_iter_warns_with_the_knob():
    p, q = _marginals()
    M = torch.rand(1, 10, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    options = SolverOptions(epsilon=0.05, solver="proximal", max_iter=2, tol=1e-12, inner_max_iter=200)
    start = initial_plan(None, p=p, q=q, solver="proximal")
    with pytest.warns(OTConvergenceWarning, match="raise max_iter"):
        solve_plan(lambda T: M, p=p, q=q, start=start, options=options)


def test_identity_start_needs_paired_marginals():
    p = torch.full((1, 4), 0.25, dtype=torch.float64)
    q = torch.tensor([[0.1, 0.2, 0.3, 0.4]], dtype=torch.float64)
    with pytest.raises(ValueError, match="paired"):
        initial_plan("identity", p=p, q=q, solver="proximal")
    T = initial_plan("identity", p=p, q=p, solver="proximal")
    assert (T > 0).all(), "a proximal start must be strictly positive"
    torch.testing.assert_close(T.sum(-1), p)


def test_solver_options_are_validated_once_frozen_and_the_problem_data_go_by_keyword():
    with pytest.raises(ValueError, match="inner_tol"):
        SolverOptions(epsilon=0.1, solver="proximal", max_iter=5, tol=0.0, inner_max_iter=10, inner_tol=-1.0)
    with pytest.raises(ValueError, match="check_every"):
        SolverOptions(epsilon=0.1, solver="proximal", max_iter=5, tol=0.0, inner_max_iter=10, check_every=0)
    options = SolverOptions(epsilon=0.1, solver="proximal", max_iter=5, tol=0.0, inner_max_iter=10)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.epsilon = 1.0  # type: ignore[misc]
    p, q = _marginals()
    start = initial_plan(None, p=p, q=q, solver="proximal")
    with pytest.raises(TypeError):
        solve_plan(lambda T: T, p, q, start, options)  # type: ignore[misc]
    with pytest.raises(ValueError, match="solve_plan runs"):
        solve_plan(lambda T: T, p=p, q=q, start=start, options=dataclasses.replace(options, solver="pot"))
    K = torch.eye(4, dtype=torch.float64).expand(2, 4, 4)
    lam, w = torch.full((2,), 0.5, dtype=torch.float64), torch.full((4,), 0.25, dtype=torch.float64)
    with pytest.raises(TypeError):  # p and qs cannot be swapped silently: neither goes by position
        gw_barycenter(K, lam, w, w)  # type: ignore[misc]
