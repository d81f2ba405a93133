import numpy as np
import ot
import pytest
import torch

from structalign_ros.core.ot import OTConvergenceWarning, sinkhorn, sinkhorn2


def _problem(n=9, m=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(n, dtype=torch.float64, generator=g) + 0.1
    b = torch.rand(m, dtype=torch.float64, generator=g) + 0.1
    M = torch.rand(n, m, dtype=torch.float64, generator=g)
    return a / a.sum(), b / b.sum(), M


def test_plan_matches_pot():
    a, b, M = _problem()
    T = sinkhorn(a, b, M, epsilon=0.05, tol=1e-12)
    ref = ot.sinkhorn(a.numpy(), b.numpy(), M.numpy(), 0.05, stopThr=1e-13, numItermax=100000)
    np.testing.assert_allclose(T.numpy(), ref, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(T.sum(1).numpy(), a.numpy(), atol=1e-11)
    np.testing.assert_allclose(T.sum(0).numpy(), b.numpy(), atol=1e-11)


def test_value_matches_pot_and_gradient_is_the_envelope_one():
    a, b, M = _problem(seed=1)
    eps = 0.05
    M1 = M.clone().requires_grad_(True)
    value = sinkhorn2(a, b, M1, epsilon=eps, tol=1e-12)
    value.backward()
    ref = ot.sinkhorn2(a.numpy(), b.numpy(), M.numpy(), eps, stopThr=1e-13, numItermax=100000)
    assert float(value) == pytest.approx(float(ref), rel=1e-9)
    # envelope gradient = the optimal plan (POT's), i.e. the derivative of the regularised objective
    plan = ot.sinkhorn(a.numpy(), b.numpy(), M.numpy(), eps, stopThr=1e-13, numItermax=100000)
    np.testing.assert_allclose(M1.grad.numpy(), plan, rtol=1e-7, atol=1e-12)

    def regularised(Mx):
        T = sinkhorn(a, b, Mx, epsilon=eps, tol=1e-13, max_iter=100000)
        return float((T * Mx).sum() + eps * (T * (T.log() - 1)).sum())

    E = torch.randn(M.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    h = 1e-5
    fd = (regularised(M + h * E) - regularised(M - h * E)) / (2 * h)
    assert fd == pytest.approx(float((M1.grad * E).sum()), rel=1e-6)


def test_batched_equals_looped():
    problems = [_problem(seed=s) for s in range(4)]
    a = torch.stack([p[0] for p in problems])
    b = torch.stack([p[1] for p in problems])
    M = torch.stack([p[2] for p in problems])
    T = sinkhorn(a, b, M, epsilon=0.02)
    for i, (ai, bi, Mi) in enumerate(problems):
        torch.testing.assert_close(T[i], sinkhorn(ai, bi, Mi, epsilon=0.02))


def test_tiny_epsilon_stays_finite_in_log_domain():
    a, b, M = _problem(seed=2)
    with pytest.warns(OTConvergenceWarning):  # 1e5 cost/epsilon ratio: slow, but never NaN
        T = sinkhorn(a, b, 100.0 * M, epsilon=1e-3, max_iter=200)
    assert torch.isfinite(T).all() and float(T.sum()) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(T.sum(0).numpy(), b.numpy(), atol=1e-9)  # columns are exact


def test_float32_and_float16_inputs():
    a, b, M = _problem(seed=3)
    for dt in (torch.float32, torch.float16):
        T = sinkhorn(a.to(dt), b.to(dt), M.to(dt), epsilon=0.05, tol=1e-4)
        assert T.dtype == dt and torch.isfinite(T).all()
        assert float((T.float().sum() - 1).abs()) < 1e-2


def test_non_finite_cost_is_rejected():
    a, b, M = _problem()
    M[0, 0] = float("nan")
    with pytest.raises(ValueError, match="M contains NaN"):
        sinkhorn(a, b, M, epsilon=0.1)
