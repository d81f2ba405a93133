"""E3, UniOMA §III: the structural term's wall-clock against the number of modalities M, the
barycenter route against GW between all pairs."""

from __future__ import annotations

import statistics
import sys
import warnings
from pathlib import Path

from structalign_ros.core.ot import OTConvergenceWarning

from .data import Setup
from .stats import fmt


def run(su: Setup, n: int, repeats: int) -> dict:
    """The structural term's wall-clock against M = 2..7: barycenter route vs all pairs of GW."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench/
    from bench_train import slope, structure_ms

    from structalign_ros.core.config import ObjectiveConfig

    ms = list(range(2, 8))
    bary: dict[int, list[float]] = {m: [] for m in ms}
    pair: dict[int, list[float]] = {m: [] for m in ms}
    slopes_b, slopes_p = [], []
    for _ in su.seeds:
        for m in ms:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OTConvergenceWarning)
                b, p = structure_ms(m, n, repeats, ObjectiveConfig())
            bary[m].append(b)
            pair[m].append(p)
        slopes_b.append(slope(ms, [bary[m][-1] for m in ms]))
        slopes_p.append(slope(ms, [pair[m][-1] for m in ms]))
    print(f"\nE3  structural term with backward, n = {n}, ms (median of {repeats}; mean ± std over rounds)")
    print(f"{'M':>3s} {'barycenter':>16s} {'pairwise GW':>16s}")
    for m in ms:
        print(f"{m:3d} {fmt(bary[m], 1):>16s} {fmt(pair[m], 1):>16s}")
    print(f"log-log slope: barycenter {fmt(slopes_b)}, pairwise {fmt(slopes_p)}")
    return {
        "slope_barycenter": statistics.fmean(slopes_b),
        "slope_pairwise": statistics.fmean(slopes_p),
        "slope_barycenter_std": statistics.stdev(slopes_b) if len(slopes_b) > 1 else 0.0,
        "slope_pairwise_std": statistics.stdev(slopes_p) if len(slopes_p) > 1 else 0.0,
        "n": n,
        "m": ms,
        "barycenter_ms": [statistics.fmean(bary[m]) for m in ms],
        "pairwise_gw_ms": [statistics.fmean(pair[m]) for m in ms],
    }


def plot(r, plt, save) -> None:
    fig, ax = plt.subplots(figsize=(4.2, 3.2))
    ax.loglog(r["m"], r["barycenter_ms"], "o-", label=f"barycenter (slope {r['slope_barycenter']:.2f})")
    ax.loglog(r["m"], r["pairwise_gw_ms"], "s-", label=f"pairwise GW (slope {r['slope_pairwise']:.2f})")
    ax.set_xticks(r["m"], [str(m) for m in r["m"]])
    ax.set_xlabel("modalities M")
    ax.set_ylabel(f"ms per step (n = {r['n']})")
    ax.legend(fontsize=8)
    save(fig, "e3_scaling.png")
