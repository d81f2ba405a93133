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

A second suite (``--suite random``, on by default) checks *quality* on seeded random instances, not
the paired data above: unpaired RBF kernels and distance matrices (n != m), non-uniform and
zero-containing marginals, scales 0.01-100, FGW, and barycenters of paired and unpaired inputs. Per
group: ours/POT value ratio (median, p90, share worse by > 1 % and > 10 %), the spread over scales of
GW(sA, sB) / s² (max/min - 1), and the total time of each side. Defaults everywhere (ours: T0="auto";
POT: its defaults, product start; barycenters: ``gromov_barycenters`` 20 rounds, random start).

    .venv/bin/python bench/bench_ot.py            # both suites, prints tables then one JSON line
    .venv/bin/python bench/bench_ot.py --quick    # n in {64, 128}, M in {2, 6}; fewer instances
    .venv/bin/python bench/bench_ot.py --suite random --instances 40
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
import warnings
from functools import partial

import ot
import torch

from structalign_ros.core.ot import (
    OTConvergenceWarning,
    fused_gromov_wasserstein2,
    gromov_wasserstein2,
    gw_barycenter,
    gw_value,
)
from structalign_ros.core.ot.reference import pot_gw_barycenter

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


def unioma_step(Kx: torch.Tensor, views: list[torch.Tensor], W0: torch.Tensor, logits0: torch.Tensor):
    """The hot path as UniOMA calls it: identity starts, a fixed small budget, warnings silenced."""
    W, logits = W0.clone().requires_grad_(True), logits0.clone().requires_grad_(True)
    lam = torch.softmax(logits, 0)
    budget = {"max_iter": 10, "inner_max_iter": 30}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OTConvergenceWarning)
        bary = gw_barycenter(Kx, lam, T0="identity", epsilon=0.05, gw_steps=2, **budget)
        Kz = embed_kernels(views, W)
        M = Kx.shape[0]
        d = gromov_wasserstein2(bary.C.expand(M, -1, -1), Kz, T0="identity", epsilon=0.05, **budget)
    (lam * d).sum().backward()
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


SCALES = (0.01, 1.0, 100.0)


def _structure(n: int, g: torch.Generator, kind: str) -> torch.Tensor:
    X = torch.randn(n, int(torch.randint(2, 6, (), generator=g)), dtype=torch.float64, generator=g)
    return rbf(X) if kind == "kernel" else (lambda D: D / D.max())(torch.cdist(X, X))


def _weights(n: int, g: torch.Generator, zeros: int) -> torch.Tensor:
    w = torch.rand(n, dtype=torch.float64, generator=g) + 0.2
    w[torch.randperm(n, generator=g)[:zeros]] = 0.0
    return w / w.sum()


def gw_instance(seed: int, kind: str, zeros: bool):
    """Unpaired instance: n != m in [8, 40], non-uniform weights (a few zeros if ``zeros``)."""
    g = torch.Generator().manual_seed(seed)
    n, m = (int(x) for x in torch.randint(8, 41, (2,), generator=g))
    m = m + 1 if m == n else m
    z = (2, 3) if zeros else (0, 0)
    return _structure(n, g, kind), _structure(m, g, kind), _weights(n, g, z[0]), _weights(m, g, z[1])


def _np(x: torch.Tensor):
    return x.numpy()


def gw_group(kind: str, zeros: bool, fused: bool, instances: int) -> dict:
    ratios, spreads, ours_s, pot_s = [], [], 0.0, 0.0
    for seed in range(instances):
        C1, C2, p, q = gw_instance(1000 * fused + 100 * zeros + seed, kind, zeros)
        Mf = torch.rand(len(p), len(q), dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        values = []
        for s in SCALES:
            t0 = time.perf_counter()
            if fused:
                v = float(fused_gromov_wasserstein2(s * s * Mf, s * C1, s * C2, p, q, alpha=0.5)) / s**2
            else:
                v = float(gromov_wasserstein2(s * C1, s * C2, p, q)) / s**2
            ours_s += time.perf_counter() - t0 if s == 1.0 else 0.0
            values.append(v)
        t0 = time.perf_counter()
        if fused:
            ref = ot.gromov.fused_gromov_wasserstein2(_np(Mf), _np(C1), _np(C2), _np(p), _np(q), alpha=0.5)
        else:
            ref = ot.gromov.gromov_wasserstein2(_np(C1), _np(C2), _np(p), _np(q))
        pot_s += time.perf_counter() - t0
        ratios.append(values[1] / float(ref))
        spreads.append(max(values) / min(values) - 1.0)
    return summary(ratios, spreads, ours_s, pot_s)


def bary_instance(seed: int, paired: bool, n: int = 20, M: int = 3):
    if paired:
        Kx, _ = make_inputs(n, M, seed, torch.float64)
        return Kx
    g = torch.Generator().manual_seed(seed)
    return torch.stack([_structure(n, g, "kernel") for _ in range(M)])


def bary_group(paired: bool, instances: int) -> dict:
    ratios, ours_s, pot_s = [], 0.0, 0.0
    for seed in range(instances):
        K = bary_instance(seed, paired)
        M, n = K.shape[:2]
        lam = torch.softmax(
            torch.randn(M, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)), 0
        )
        t0 = time.perf_counter()
        bary = gw_barycenter(K, lam)
        ours_s += time.perf_counter() - t0
        p = torch.full((n,), 1.0 / n, dtype=torch.float64)
        t0 = time.perf_counter()
        C, T = pot_gw_barycenter(K, lam, p, p.expand(M, n), None, seed=seed)
        pot_s += time.perf_counter() - t0
        ratios.append(objective(bary.C, bary.plans, K, lam) / objective(C, T, K, lam))
    return summary(ratios, [], ours_s, pot_s)


def summary(ratios: list[float], spreads: list[float], ours_s: float, pot_s: float) -> dict:
    r = sorted(ratios)
    return {
        "instances": len(r),
        "median": statistics.median(r),
        "p90": r[min(len(r) - 1, math.ceil(0.9 * len(r)) - 1)],
        "worse_1pct": sum(x > 1.01 for x in r) / len(r),
        "worse_10pct": sum(x > 1.10 for x in r) / len(r),
        "scale_spread": max(spreads) if spreads else None,
        "ours_s": round(ours_s, 2),
        "pot_s": round(pot_s, 2),
    }


def random_suite(instances: int) -> dict:
    """Quality on random instances; prints a table, returns {group: summary}."""
    groups = {
        "gw kernels": partial(gw_group, "kernel", False, False),
        "gw distances": partial(gw_group, "distance", False, False),
        "gw zero weights": partial(gw_group, "kernel", True, False),
        "fgw kernels a=0.5": partial(gw_group, "kernel", False, True),
        "barycenter paired": partial(bary_group, True),
        "barycenter unpaired": partial(bary_group, False),
    }
    print(f"# random instances ({instances} per group, float64, defaults): ratio = ours / POT")
    header = ("group", "median", "p90", ">1%", ">10%", "scale spread", "ours s", "POT s")
    widths = (20, 7, 7, 5, 5, 12, 7, 7)
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, widths, strict=True)))
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OTConvergenceWarning)  # counted in the ratios instead
        for name, run in groups.items():
            res = out[name] = run(instances)
            spread = "-" if res["scale_spread"] is None else f"{res['scale_spread']:.1e}"
            print(
                f"{name:>20} {res['median']:>7.3f} {res['p90']:>7.3f} {res['worse_1pct']:>5.2f} "
                f"{res['worse_10pct']:>5.2f} {spread:>12} {res['ours_s']:>7.2f} {res['pot_s']:>7.2f}"
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of ours (median)")
    parser.add_argument("--pot-iters", type=int, default=20)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--suite", choices=["both", "paired", "random"], default="both")
    parser.add_argument("--instances", type=int, default=None, help="random instances per group")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    ns, ms = ([64, 128], [2, 6]) if args.quick else ([64, 128, 256], [2, 3, 6, 8])

    print(
        f"# torch {torch.__version__}, POT {ot.__version__}, {args.threads} threads, {args.dtype}, "
        f"load average {os.getloadavg()[0]:.2f}, POT barycenter capped at {args.pot_iters} rounds"
    )
    result = {}
    if args.suite in ("both", "random"):
        result["random"] = random_suite(args.instances or (10 if args.quick else 20))
    if args.suite in ("both", "paired"):
        result["cases"] = paired_suite(args, dtype, ns, ms)
    print(json.dumps(result))


def paired_suite(args, dtype: torch.dtype, ns: list[int], ms: list[int]) -> list[dict]:
    """UniOMA's regulariser step on paired data, ours against POT; prints a table."""
    header = ("n", "M", "ours ms", "POT ms", "speedup", "ours obj", "POT obj", "ratio", "UniOMA ms")
    widths = (4, 3, 9, 10, 8, 11, 11, 7, 10)
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, widths, strict=True)))
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
            _, unioma_ms = timed(partial(unioma_step, Kx, views, W0, logits0), args.repeats)
            # POT gets float64: with float32 torch inputs its solver ran ~15x slower here
            Kx64, views64, W64 = Kx.double(), [v.double() for v in views], W0.double()
            pot = partial(pot_step, Kx64, views64, W64, logits0.double(), args.pot_iters)
            (Cp, plans_p), pot_ms = timed(pot, 1)
            case = {
                "n": n,
                "m": M,
                "ours_ms": round(ours_ms, 2),
                "unioma_ms": round(unioma_ms, 2),
                "pot_ms": round(pot_ms, 1),
                "ours_objective": objective(C, plans, Kx, lam),
                "pot_objective": objective(Cp, plans_p, Kx64, lam),
            }
            cases.append(case)
            print(
                f"{n:>4} {M:>3} {ours_ms:>9.2f} {pot_ms:>10.1f} {pot_ms / ours_ms:>7.1f}x "
                f"{case['ours_objective']:>11.6f} {case['pot_objective']:>11.6f} "
                f"{case['ours_objective'] / case['pot_objective']:>7.4f} {unioma_ms:>10.2f}"
            )
    for n in ns:
        row = [c for c in cases if c["n"] == n]
        sizes = [c["m"] for c in row]
        ours_slope = slope(sizes, [c["ours_ms"] for c in row])
        pot_slope = slope(sizes, [c["pot_ms"] for c in row])
        print(f"# n={n}: log-log slope in M, ours {ours_slope:.2f}, POT {pot_slope:.2f}")
    print(f"# load average {os.getloadavg()[0]:.2f} at the end")
    return cases


if __name__ == "__main__":
    main()
