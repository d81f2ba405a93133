import importlib

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


# ------------------------------------------- the scaling form against the log-domain iterations

SINKHORN = importlib.import_module("structalign_ros.core.ot.sinkhorn")


def _log_kernel_problems(dtype, seed=0, B=4, n=30, m=24):
    """Proximal-like log-kernels (a sharp prior plus a cost), zero weights in problem 0, and a wide
    spread of epsilon so that some problems stop early and are frozen while the others go on."""
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(B, n, dtype=torch.float64, generator=g) + 0.1
    b = torch.rand(B, m, dtype=torch.float64, generator=g) + 0.1
    a[0, :3], b[0, -2:] = 0.0, 0.0
    a, b = a / a.sum(-1, keepdim=True), b / b.sum(-1, keepdim=True)
    eps = torch.tensor([0.5, 0.05, 0.01, 0.003], dtype=torch.float64)[:B, None, None]
    prior = (a.unsqueeze(-1) * b.unsqueeze(-2)).log() - 5.0 * torch.rand(
        B, n, m, dtype=torch.float64, generator=g
    )
    log_K = prior - torch.rand(B, n, m, dtype=torch.float64, generator=g) / eps
    return log_K.to(dtype), a.to(dtype), b.to(dtype)


def _both(monkeypatch, log_K, a, b, **kw):
    """(default solve, log-domain-only solve, blocks run scaled, blocks that fell back)."""
    used = {True: 0, False: 0}
    block = SINKHORN._Scaled.block

    def spy(self, start, end):
        ran = block(self, start, end)
        used[ran] += 1
        return ran

    monkeypatch.setattr(SINKHORN._Scaled, "block", spy)
    fast = SINKHORN.sinkhorn_log(log_K, a=a, b=b, warn=False, **kw)
    monkeypatch.setattr(SINKHORN, "MIN_SCALED_BLOCK", 10**9)
    slow = SINKHORN.sinkhorn_log(log_K, a=a, b=b, warn=False, **kw)
    monkeypatch.undo()
    return fast, slow, used[True], used[False]


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
@pytest.mark.parametrize("max_iter, tol", [(30, 1e-7), (500, 1e-9)])
def test_scaled_iterations_are_the_log_domain_ones(monkeypatch, dtype, rtol, max_iter, tol):
    log_K, a, b = _log_kernel_problems(dtype)
    fast, slow, scaled, _ = _both(monkeypatch, log_K, a, b, max_iter=max_iter, tol=tol)
    assert scaled > 0
    torch.testing.assert_close(fast.T, slow.T, rtol=rtol, atol=1e-12 if dtype == torch.float64 else 1e-7)
    on = torch.isfinite(slow.u)
    assert torch.equal(on, torch.isfinite(fast.u)) and torch.equal(on, a > 0)
    assert torch.equal(torch.isfinite(fast.v), b > 0)
    assert torch.equal(fast.finite, slow.finite)
    # zero-mass rows and columns stay exactly zero
    assert bool((fast.T[0, :3] == 0).all()) and bool((fast.T[0, :, -2:] == 0).all())
    # the same problems stopped, at the same checks (their errors agree to rounding)
    assert torch.equal(
        fast.err <= max(tol, 100 * torch.finfo(dtype).eps), slow.err <= max(tol, 100 * torch.finfo(dtype).eps)
    )


def test_scaled_blocks_fall_back_to_the_log_domain_where_unsafe(monkeypatch):
    # a cold start at a tiny epsilon: the first blocks' scalings span far more than float32 allows
    log_K, a, b = _log_kernel_problems(torch.float32, seed=1)
    log_K = 20.0 * log_K
    fast, slow, _, fell_back = _both(monkeypatch, log_K, a, b, max_iter=60, tol=1e-7)
    assert fell_back > 0
    torch.testing.assert_close(fast.T, slow.T, rtol=1e-4, atol=1e-7)
    # weights so small that no range is safe in float32: every block runs in the log domain
    tiny_a, tiny_b = a * 1e-30, b * 1e-30
    fast, slow, scaled, _ = _both(monkeypatch, log_K / 20.0, tiny_a, tiny_b, max_iter=30, tol=1e-7)
    assert scaled == 0
    assert torch.equal(fast.T, slow.T) and torch.equal(fast.u, slow.u)


def test_non_finite_scalings_keep_the_last_finite_iterate_as_before(monkeypatch):
    log_K, a, b = _log_kernel_problems(torch.float64, seed=2)
    log_K[1, 4] = float("-inf")  # a supported row with no admissible entry: its dual goes non-finite
    fast, slow, _, fell_back = _both(monkeypatch, log_K, a, b, max_iter=30, tol=1e-9)
    assert fell_back > 0
    assert torch.equal(fast.finite, slow.finite) and not bool(fast.finite[1])
    torch.testing.assert_close(fast.u, slow.u, rtol=1e-10, atol=0.0)
