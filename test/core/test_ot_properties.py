"""Seeded random-instance properties of the OT engine (issue 11), POT as the oracle where it has one.

GW is non-convex: no test asserts equal plans on generic data. Plans are compared only where the
answer is unique (Sinkhorn) or where two solves must follow the same iterations (a zero-mass entry
against the problem without it, a problem in a batch against the same problem alone).
"""

import contextlib
import warnings

import numpy as np
import ot
import pytest
import torch
from ot_data import paired_kernels, random_gw, weights

from structalign_ros.core.ot import (
    OTConvergenceWarning,
    fgw_barycenter,
    fused_gromov_wasserstein,
    fused_gromov_wasserstein2,
    gromov_wasserstein,
    gromov_wasserstein2,
    gw_barycenter,
    sinkhorn,
    sinkhorn2,
)
from structalign_ros.core.ot._solver import SolverOptions, initial_plan, solve_plan

F64 = torch.float64
QUICK = {"max_iter": 30, "inner_max_iter": 100}  # a fixed, small budget where the test needs no optimum


@contextlib.contextmanager
def _quiet():
    """A fixed budget is the point of these calls, not a failure."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OTConvergenceWarning)
        yield


# ---------------------------------------------------------------- 1. zero-mass entries are exact


def test_sinkhorn_zero_weight_of_the_issue_matches_pot_rows():
    a = torch.tensor([0.5, 0.0, 0.5], dtype=F64)
    b = torch.tensor([0.5, 0.5], dtype=F64)
    M = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]], dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # converges, no advice
        T = sinkhorn(a, b, M, epsilon=0.1)
    ref = ot.sinkhorn(a[[0, 2]].numpy(), b.numpy(), M[[0, 2]].numpy(), 0.1, stopThr=1e-12)
    assert float(T.sum()) == pytest.approx(1.0, abs=1e-12)
    torch.testing.assert_close(T.sum(1), a, rtol=0, atol=1e-12)
    np.testing.assert_allclose(T[[0, 2]].numpy(), ref, atol=1e-9)
    assert torch.equal(T[1], torch.zeros(2, dtype=F64))


@pytest.mark.parametrize("seed", range(3))
def test_sinkhorn_with_zero_weights_is_sinkhorn_on_the_support_batched(seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.stack([weights(9, g, zeros=z) for z in (0, 2, 4)])
    b = torch.stack([weights(7, g, zeros=z) for z in (3, 0, 1)])
    M = torch.rand(3, 9, 7, dtype=F64, generator=g)
    T = sinkhorn(a, b, M, epsilon=0.05, tol=1e-12)
    value = sinkhorn2(a, b, M, epsilon=0.05, tol=1e-12)
    for i in range(3):
        r, c = a[i] > 0, b[i] > 0
        ref = ot.sinkhorn(a[i][r].numpy(), b[i][c].numpy(), M[i][r][:, c].numpy(), 0.05, stopThr=1e-13)
        np.testing.assert_allclose(T[i][r][:, c].numpy(), ref, atol=1e-10)
        assert float(T[i][~r].abs().sum()) == 0.0 and float(T[i][:, ~c].abs().sum()) == 0.0
        assert float(value[i]) == pytest.approx(float((torch.as_tensor(ref) * M[i][r][:, c]).sum()), rel=1e-8)


def test_gw_zero_weights_of_the_issue_give_pots_value():
    g = torch.Generator().manual_seed(0)
    from ot_data import rbf

    C1 = rbf(torch.randn(6, 3, dtype=F64, generator=g))
    C2 = rbf(torch.randn(5, 3, dtype=F64, generator=g))
    p = torch.tensor([0.25, 0.25, 0.0, 0.25, 0.25, 0.0], dtype=F64)
    ours = float(gromov_wasserstein2(C1, C2, p=p))
    reduced = ot.gromov.gromov_wasserstein2(C1[p > 0][:, p > 0].numpy(), C2.numpy())
    assert ours <= reduced * (1 + 1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_gw_and_fgw_with_zero_weights_follow_the_problem_without_them(seed):
    C1, C2, _, _ = random_gw(seed, n_max=14)
    g = torch.Generator().manual_seed(100 + seed)
    n, m = C1.shape[0], C2.shape[0]
    p, q = weights(n, g, zeros=2), weights(m, g, zeros=1)
    r, c = p > 0, q > 0
    M = torch.rand(n, m, dtype=F64, generator=g)
    with _quiet():
        T = gromov_wasserstein(C1, C2, p, q, T0="product", **QUICK)
        Tr = gromov_wasserstein(C1[r][:, r], C2[c][:, c], p[r], q[c], T0="product", **QUICK)
        F = fused_gromov_wasserstein(M, C1, C2, p, q, alpha=0.6, T0="product", **QUICK)
        Fr = fused_gromov_wasserstein(M[r][:, c], C1[r][:, r], C2[c][:, c], p[r], q[c], alpha=0.6, **QUICK)
    for full, red in ((T, Tr), (F, Fr)):
        assert float(full[~r].abs().sum()) == 0.0 and float(full[:, ~c].abs().sum()) == 0.0
        torch.testing.assert_close(full[r][:, c], red, rtol=0, atol=1e-10)
        torch.testing.assert_close(full.sum(1), p, rtol=0, atol=1e-14)


def test_barycenter_zero_weights_are_exact_and_change_nothing_else():
    K = paired_kernels(10, 3, seed=1)
    p = torch.full((10,), 0.1, dtype=F64)
    lam = torch.tensor([0.2, 0.3, 0.5], dtype=F64)
    qs = torch.full((3, 10), 1 / 9, dtype=F64)
    qs[:, 4] = 0.0  # the same point is absent from every input
    keep = torch.arange(10) != 4
    init = torch.tensordot(lam, K, dims=1)
    with _quiet():
        full = gw_barycenter(K, lam, p=p, qs=qs, init_C=init, T0="product", max_iter=5)
        red = gw_barycenter(K[:, keep][:, :, keep], lam, p=p, qs=qs[:, keep], init_C=init, max_iter=5)
    assert float(full.plans[:, :, 4].abs().sum()) == 0.0
    torch.testing.assert_close(full.plans[:, :, keep], red.plans, rtol=0, atol=1e-10)
    assert float(full.objective) == pytest.approx(float(red.objective), rel=1e-9)
    # zero barycenter weights: zero plan rows, zero barycenter rows, finite everything
    p0 = torch.full((10,), 1 / 8, dtype=F64)
    p0[[2, 7]] = 0.0
    with _quiet():
        bary = gw_barycenter(K, lam, p=p0, T0="product", max_iter=5)
        fused = fgw_barycenter(torch.randn(3, 10, 2, dtype=F64), K, lam, p=p0, T0="product", max_iter=5)
    for b in (bary, fused):
        assert float(b.plans[:, [2, 7]].abs().sum()) == 0.0 and float(b.C[[2, 7]].abs().sum()) == 0.0
        assert torch.isfinite(b.C).all() and torch.isfinite(b.objective)
    assert float(fused.X[[2, 7]].abs().sum()) == 0.0


# ---------------------------------------------------------------- 2. scale


@pytest.mark.parametrize("seed", [0, 1])  # a kernel pair, a distance pair
def test_gw_value_scales_with_the_square_of_the_structures(seed):
    C1, C2, p, q = random_gw(seed, n_max=16)
    values = []
    with _quiet():
        for s in (1e-2, 1.0, 1e2):
            values.append(float(gromov_wasserstein2(s * C1, s * C2, p, q, **QUICK)) / s**2)
            values.append(
                float(
                    fused_gromov_wasserstein2(
                        torch.zeros(C1.shape[0], C2.shape[0], dtype=F64),
                        s * C1,
                        s * C2,
                        p,
                        q,
                        alpha=1.0,
                        **QUICK,
                    )
                )
                / s**2
            )
    assert max(values) <= min(values) * 1.01


def test_outer_loop_cannot_stop_on_an_unfinished_projection():
    C1, C2, p, q = random_gw(2, n_max=16)
    pb, qb = p[None], q[None]
    from structalign_ros.core.ot.gw import gw_gradient

    grad = gw_gradient(C1[None], C2[None], p=pb, q=qb)
    start = initial_plan("product", p=pb, q=qb, solver="proximal")
    # 2 Sinkhorn iterations per step: the plan barely moves, but it is nowhere near a coupling
    options = SolverOptions(
        epsilon=0.001, solver="proximal", max_iter=20, tol=1e-1, inner_max_iter=2, inner_tol=1e-9
    )
    with pytest.warns(OTConvergenceWarning, match="raise inner_max_iter"):
        solve_plan(grad, p=pb, q=qb, start=start, options=options)


def test_every_stop_short_warns_and_names_the_knob():
    C1, C2, p, q = random_gw(3, n_max=12)
    with pytest.warns(OTConvergenceWarning, match="raise max_iter"):
        gromov_wasserstein(C1, C2, p, q, max_iter=2, tol=1e-12)
    with pytest.warns(OTConvergenceWarning, match="raise max_iter or epsilon"):
        sinkhorn(p, q, torch.rand(len(p), len(q), dtype=F64), epsilon=1e-3, max_iter=3)
    with pytest.warns(OTConvergenceWarning, match=r"gw_barycenter .*raise max_iter \(block"):
        gw_barycenter(
            paired_kernels(8, 2, seed=3), torch.tensor([0.5, 0.5], dtype=F64), T0="product", max_iter=1
        )


# ---------------------------------------------------------------- 3. validation


def _gw(**kw):
    C1, C2, p, q = random_gw(4, n_max=10)
    args = {"C1": C1, "C2": C2, "p": p, "q": q, **kw}
    return lambda: gromov_wasserstein2(**args, max_iter=2)


def _fgw(**kw):
    C1, C2, p, q = random_gw(4, n_max=10)
    args = {"M": torch.rand(len(p), len(q), dtype=F64), "C1": C1, "C2": C2, **kw}
    return lambda: fused_gromov_wasserstein(**args, max_iter=2)


def _bary(**kw):
    args = {"Ks": paired_kernels(6, 3), "lambdas": torch.full((3,), 1 / 3, dtype=F64), **kw}
    return lambda: gw_barycenter(**args, max_iter=1)


C_ = random_gw(4, n_max=10)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (_gw(p=C_[2] * 2), ValueError, "equal mass"),
        (_gw(p=torch.full_like(C_[2], float("nan"))), ValueError, "p contains NaN"),
        (_gw(q=C_[3].clone().index_fill_(0, torch.tensor([0]), -0.1)), ValueError, "q has negative"),
        (_gw(q=torch.zeros_like(C_[3])), ValueError, "q has zero total mass"),
        (_gw(p=C_[2][:-1]), ValueError, "p of shape"),
        (_gw(C1=C_[0][:, :-1]), ValueError, "C1 must be square"),
        (_gw(C1=torch.zeros(0, 0)), ValueError, "C1 is empty"),
        (_gw(C2=[[0.0, 1.0], [1.0, 0.0]]), TypeError, "C2 must be a torch.Tensor"),
        (_gw(C1=torch.zeros(3, 2, 2, 2)), ValueError, "C1 must have 2 or 3 dims"),
        (_gw(T=torch.ones(len(C_[3]), len(C_[2]), dtype=F64)), ValueError, r"T must be .*transposed"),
        (_gw(T0=torch.ones(len(C_[3]), len(C_[2]), dtype=F64)), ValueError, r"T0 must be .*transposed"),
        (_gw(T0=torch.full((len(C_[2]), len(C_[3])), float("nan"))), ValueError, "T0 contains NaN"),
        (_gw(T0="diagonal"), ValueError, "T0 must be one of"),
        (_gw(epsilon=0.0), ValueError, "epsilon must be"),
        (_gw(epsilon=float("inf")), ValueError, "epsilon must be"),
        (_gw(solver="exact"), ValueError, "solver must be"),
        (_gw(C1=torch.stack([C_[0]] * 2), C2=torch.stack([C_[1]] * 3)), ValueError, "batch sizes"),
        (_fgw(M=torch.rand(len(C_[3]), len(C_[2]), dtype=F64)), ValueError, "M must be .*transposed"),
        (
            _fgw(M=torch.rand(4, len(C_[2]), len(C_[3]), dtype=F64), C1=torch.stack([C_[0]] * 2)),
            ValueError,
            "batch sizes",
        ),
        (_fgw(alpha=1.5), ValueError, "alpha must be"),
        (_bary(lambdas=torch.tensor([1.0, 0.5, 0.5], dtype=F64)), ValueError, "lambdas must sum to 1"),
        (_bary(lambdas=torch.tensor([1.5, -0.5, 0.0], dtype=F64)), ValueError, "lambdas must be non-neg"),
        (_bary(lambdas=torch.zeros(3, dtype=F64)), ValueError, "lambdas must sum to 1"),
        (_bary(lambdas=torch.ones(2, dtype=F64) / 2), ValueError, r"lambdas must be \(3,\)"),
        (_bary(Ks=torch.zeros(0, 6, 6), lambdas=torch.zeros(0)), ValueError, "Ks is empty"),
        (_bary(qs=torch.full((3, 6), 0.5, dtype=F64)), ValueError, "equal mass"),
        (_bary(T0=torch.ones(3, 5, 6, dtype=F64)), ValueError, "T0 must be"),
        (_bary(init_C=torch.ones(4, 5, dtype=F64)), ValueError, "init_C must be"),
        (
            lambda: sinkhorn(torch.ones(3) / 3, torch.ones(4) / 4, torch.rand(4, 3), 0.1),
            ValueError,
            "transposed",
        ),
        (lambda: sinkhorn(None, None, torch.rand(0, 3), 0.1), ValueError, "M is empty"),
        (lambda: sinkhorn(None, None, torch.rand(3, 3), -1.0), ValueError, "epsilon"),
    ],
)
def test_invalid_inputs_raise_an_error_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_integer_inputs_are_cast_not_truncated():
    g = torch.Generator().manual_seed(5)
    A = torch.randint(0, 5, (7, 7), generator=g)
    A = A + A.T
    B = torch.randint(0, 5, (6, 6), generator=g)
    B = B + B.T
    with _quiet():
        ours = gromov_wasserstein2(A, B, T0="product", **QUICK)
        ref = gromov_wasserstein2(A.double(), B.double(), T0="product", **QUICK)
        T = sinkhorn(None, None, torch.randint(0, 3, (4, 5), generator=g), 1.0)
    assert ours.dtype == F64 and float(ours) == float(ref) and float(ours) > 0
    assert T.dtype == F64 and float(T.sum()) == pytest.approx(1.0)


# ---------------------------------------------------------------- 4. batches


def test_a_problem_does_not_depend_on_its_batch_neighbours():
    instances = [random_gw(s, n_max=12) for s in (10, 12, 14)]
    n, m = 12, 12  # pad each instance to a common size with zero-weight points
    C1 = torch.zeros(3, n, n, dtype=F64)
    C2 = torch.zeros(3, m, m, dtype=F64)
    p, q = torch.zeros(3, n, dtype=F64), torch.zeros(3, m, dtype=F64)
    for i, (a, b, pa, qb) in enumerate(instances):
        C1[i, : len(pa), : len(pa)], C2[i, : len(qb), : len(qb)] = a, b
        p[i, : len(pa)], q[i, : len(qb)] = pa, qb
    with _quiet():
        batch = gromov_wasserstein(C1, C2, p, q, T0="product", epsilon=0.02, max_iter=25)
        M = torch.rand(3, n, m, dtype=F64, generator=torch.Generator().manual_seed(1))
        fused = fused_gromov_wasserstein(M, C1, C2, p, q, epsilon=0.02, max_iter=25)
        plans = sinkhorn(p, q, M, epsilon=0.01, tol=1e-11)
        for i in range(3):
            alone = gromov_wasserstein(C1[i], C2[i], p[i], q[i], T0="product", epsilon=0.02, max_iter=25)
            torch.testing.assert_close(batch[i], alone, rtol=0, atol=1e-12)
            alone = fused_gromov_wasserstein(M[i], C1[i], C2[i], p[i], q[i], epsilon=0.02, max_iter=25)
            torch.testing.assert_close(fused[i], alone, rtol=0, atol=1e-12)
            torch.testing.assert_close(
                plans[i], sinkhorn(p[i], q[i], M[i], 0.01, tol=1e-11), rtol=0, atol=1e-14
            )


# ---------------------------------------------------------------- 5. quality against POT


def test_gw_values_are_no_worse_than_pots_at_the_median_and_within_5_percent_at_p90():
    ratios = []
    for seed in range(10):  # unpaired kernels and distances, n != m, non-uniform weights
        C1, C2, p, q = random_gw(seed, n_max=14)
        with _quiet():
            ours = float(gromov_wasserstein2(C1, C2, p, q))
        ref = ot.gromov.gromov_wasserstein2(C1.numpy(), C2.numpy(), p.numpy(), q.numpy())
        ratios.append(ours / ref)
    r = np.array(ratios)
    print(f"GW ours/POT: median {np.median(r):.3f}, p90 {np.quantile(r, 0.9):.3f}")
    assert np.median(r) <= 1.0 and np.quantile(r, 0.9) <= 1.05


@pytest.mark.parametrize("paired", [True, False])
def test_barycenter_objectives_are_no_worse_than_pots(paired):
    from ot_data import rbf

    from structalign_ros.core.ot import gw_value
    from structalign_ros.core.ot.reference import pot_gw_barycenter

    def objective(C, T, K, lam):
        return float((lam * gw_value(C.expand(K.shape[0], -1, -1), K, T)).sum())

    worse = 0
    for seed in range(4):
        g = torch.Generator().manual_seed(seed)
        if paired:
            K = paired_kernels(10, 3, seed=seed, noise=0.2)
        else:
            K = torch.stack([rbf(torch.randn(10, 3, dtype=F64, generator=g)) for _ in range(3)])
        lam = torch.softmax(torch.randn(3, dtype=F64, generator=g), 0)
        with _quiet():
            ours = gw_barycenter(K, lam)  # defaults: T0="auto"
        p = torch.full((10,), 0.1, dtype=F64)
        C, T = pot_gw_barycenter(K, lam, p, p.expand(3, 10), None, seed=seed)
        worse += objective(ours.C, ours.plans, K, lam) > objective(C, T, K, lam) * (1 + 1e-9)
    assert worse == 0  # >= 90 % of instances no worse than POT (of 4: all)
