"""UniOMA's GW regulariser per training step, ours against POT on the same inputs in one run.

One step = GW barycenter C* of the M input kernels K_x^m (weights lambda) + the M differentiable
distances d_gw(C*, K_z^m) to the embedding kernels + backward to the embedding parameters and lambda.

- ours: ``gw_barycenter`` (identity start, batched over M) + ``gromov_wasserstein2`` batched over M.
- POT:  ``ot.gromov.gromov_barycenters`` (exact GW per block step, torch backend) +
        ``ot.gromov.gromov_wasserstein2`` per modality (torch backend, POT's own gradients).

``objective`` is the barycenter objective sum_m lambda_m GW(C*, K_x^m) at each side's own returned
plans, evaluated by the same function (the exact quadratic form).

POT's barycenter is capped at ``--pot-iters`` block rounds: on these kernels its iterations cycle
between plans and never meet a tolerance (1000 rounds took 129 s at n=128, M=6 with no better
objective), so a cap only makes POT faster and the comparison conservative.

    .venv/bin/python bench/bench_ot.py            # full grid, prints a table then one JSON line
    .venv/bin/python bench/bench_ot.py --quick    # n in {64, 128}, M in {2, 6}
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from functools import partial

import ot
import torch

from structalign_ros.core.ot import gromov_wasserstein2, gw_barycenter, gw_value

DIST_EPSILON = 0.1  # gentle proximal steps from the identity coupling of paired samples
DIST_STEPS = 10


def rbf(X: torch.Tensor) -> torch.Tensor:
    D = torch.cdist(X, X).square()
    return torch.exp(-D / D.median().clamp_min(1e-12))


def make_inputs(n: int, M: int, seed: int, dtype: torch.dtype) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(M, n, n) input kernels of M nonlinear views of n shared latents, and the views themselves."""
    g = torch.Generator().manual_seed(seed)
    Z = torch.randn(n, 4, dtype=torch.float64, generator=g)
    views = [
        torch.tanh(Z @ torch.randn(4, 12, dtype=torch.float64, generator=g))
        + 0.1 * torch.randn(n, 12, dtype=torch.float64, generator=g)
        for _ in range(M)
    ]
    return torch.stack([rbf(v) for v in views]).to(dtype), [v.to(dtype) for v in views]


def embed_kernels(views: list[torch.Tensor], W: torch.Tensor) -> torch.Tensor:
    """(M, n, n) embedding kernels K_z^m = rbf(x^m W_m), differentiable in W (M, 12, 16)."""
    return torch.stack([rbf(v @ W[m]) for m, v in enumerate(views)])


def ours_step(Kx: torch.Tensor, views: list[torch.Tensor], W0: torch.Tensor, logits0: torch.Tensor):
    W, logits = W0.clone().requires_grad_(True), logits0.clone().requires_grad_(True)
    lam = torch.softmax(logits, 0)
    bary = gw_barycenter(Kx, lam)
    Kz = embed_kernels(views, W)
    M = Kx.shape[0]
    d = gromov_wasserstein2(
        bary.C.expand(M, -1, -1), Kz, T0="identity", epsilon=DIST_EPSILON, max_iter=DIST_STEPS
    )
    (lam * d).sum().backward()
    assert W.grad is not None and logits.grad is not None
    return bary.C.detach(), bary.plans


def pot_step(
    Kx: torch.Tensor, views: list[torch.Tensor], W0: torch.Tensor, logits0: torch.Tensor, iters: int
):
    W, logits = W0.clone().requires_grad_(True), logits0.clone().requires_grad_(True)
    lam = torch.softmax(logits, 0)
    M, n = Kx.shape[:2]
    p = torch.full((n,), 1.0 / n, dtype=Kx.dtype)
    C, log = ot.gromov.gromov_barycenters(
        n, list(Kx), [p] * M, p, lam.detach().tolist(), max_iter=iters, tol=1e-9, random_state=0, log=True
    )
    Kz = embed_kernels(views, W)
    reg = sum(lam[m] * ot.gromov.gromov_wasserstein2(C, Kz[m], p, p) for m in range(M))
    reg.backward()
    plans = torch.stack([torch.as_tensor(t) for t in log["T"]])  # (M, N, n): rows = barycenter
    return C, plans


def objective(C: torch.Tensor, plans: torch.Tensor, Kx: torch.Tensor, lam: torch.Tensor) -> float:
    C64, K64, T64 = C.double(), Kx.double(), plans.double()
    return float((lam.double() * gw_value(C64.expand(K64.shape[0], -1, -1), K64, T64)).sum())


def timed(fn, repeats: int):
    out, times = None, []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(1e3 * (time.perf_counter() - t0))
    return out, statistics.median(times)


def slope(ms: list[int], ys: list[float]) -> float:
    """Least-squares slope of log y against log M."""
    lx, ly = [math.log(m) for m in ms], [math.log(y) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sum((a - mx) ** 2 for a in lx)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of ours (median)")
    parser.add_argument("--pot-iters", type=int, default=20)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    ns, ms = ([64, 128], [2, 6]) if args.quick else ([64, 128, 256], [2, 3, 6, 8])

    print(
        f"# torch {torch.__version__}, POT {ot.__version__}, {args.threads} threads, {args.dtype}, "
        f"load average {os.getloadavg()[0]:.2f}, POT barycenter capped at {args.pot_iters} rounds"
    )
    header = ("n", "M", "ours ms", "POT ms", "speedup", "ours obj", "POT obj", "ratio")
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, (4, 3, 9, 10, 8, 11, 11, 7), strict=True)))
    cases = []
    for n in ns:
        for M in ms:
            Kx, views = make_inputs(n, M, seed=n + M, dtype=dtype)
            g = torch.Generator().manual_seed(1)
            W0 = (0.3 * torch.randn(M, 12, 16, dtype=torch.float64, generator=g)).to(dtype)
            logits0 = torch.zeros(M, dtype=dtype)
            lam = torch.softmax(logits0, 0)
            ours_step(Kx, views, W0, logits0)  # warm-up
            (C, plans), ours_ms = timed(partial(ours_step, Kx, views, W0, logits0), args.repeats)
            # POT gets float64: with float32 torch inputs its solver ran ~15x slower here
            Kx64, views64, W64 = Kx.double(), [v.double() for v in views], W0.double()
            pot = partial(pot_step, Kx64, views64, W64, logits0.double(), args.pot_iters)
            (Cp, plans_p), pot_ms = timed(pot, 1)
            case = {
                "n": n,
                "m": M,
                "ours_ms": round(ours_ms, 2),
                "pot_ms": round(pot_ms, 1),
                "ours_objective": objective(C, plans, Kx, lam),
                "pot_objective": objective(Cp, plans_p, Kx64, lam),
            }
            cases.append(case)
            print(
                f"{n:>4} {M:>3} {ours_ms:>9.2f} {pot_ms:>10.1f} {pot_ms / ours_ms:>7.1f}x "
                f"{case['ours_objective']:>11.6f} {case['pot_objective']:>11.6f} "
                f"{case['ours_objective'] / case['pot_objective']:>7.4f}"
            )
    for n in ns:
        row = [c for c in cases if c["n"] == n]
        sizes = [c["m"] for c in row]
        ours_slope = slope(sizes, [c["ours_ms"] for c in row])
        pot_slope = slope(sizes, [c["pot_ms"] for c in row])
        print(f"# n={n}: log-log slope in M, ours {ours_slope:.2f}, POT {pot_slope:.2f}")
    print(json.dumps({"cases": cases}))


if __name__ == "__main__":
    main()
