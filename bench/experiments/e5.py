"""E5, MOVER against GRAM: cross-modal retrieval on held-out episodes under a share of shuffled
training positives."""

from __future__ import annotations

import statistics

from structalign_ros.core.eval.evaluation import retrieval

from .arms import Budget, objective, train_arm
from .corrupt import shuffle_pairs
from .data import Setup
from .probe import embed
from .stats import fmt, paired, summary

RETRIEVAL_WINDOWS = 128  # per held-out set, spread evenly in time (chance R@1 = 1/128)


def run(su: Setup, budget: Budget, fracs: list[float]) -> dict:
    """MOVER: cross-modal retrieval under a share of shuffled positives, against GRAM."""
    names = su.train.batch.modalities
    res: dict[str, dict[float, dict[str, list[float]]]] = {
        a: {f: {"r1": [], "map": []} for f in fracs} for a in ("gram", "mover")
    }
    for seed in su.seeds:
        for f in fracs:

            def transform(b, g, f=f):
                return shuffle_pairs(b, g, f)

            for arm, obj in (
                ("gram", objective("gram", su.kinds)),
                ("mover", objective("mover", su.kinds, paired=False)),
            ):
                model = train_arm(obj, su.train, su.kinds, budget, seed, transform if f > 0 else None)
                _, z = embed(model, su.test.batch)
                pairs = retrieval(z, su.test.batch.mask, names, max_windows=RETRIEVAL_WINDOWS)
                res[arm][f]["r1"].append(statistics.fmean(p["R@1"] for p in pairs.values()))
                res[arm][f]["map"].append(statistics.fmean(p["mAP"] for p in pairs.values()))
        su.log(f"E5 seed {seed} done")
    print(
        f"\nE5  retrieval on held-out episodes, mean over all {len(names) * (len(names) - 1)} ordered "
        f"modality pairs, {RETRIEVAL_WINDOWS} windows spread in time "
        f"(chance R@1 {100 / RETRIEVAL_WINDOWS:.1f} %)"
    )
    cols = ("GRAM R@1 %", "MOVER R@1 %", "GRAM mAP", "MOVER mAP")
    print(f"{'shuffled':>8s} " + " ".join(f"{c:>14s}" for c in cols) + f" {'MOVER-GRAM mAP':>22s}")
    out = {"fractions": fracs}
    for f in fracs:
        g_, m_ = res["gram"][f], res["mover"][f]
        d = paired(m_["map"], g_["map"])
        print(
            f"{f:8.2f} {fmt([100 * x for x in g_['r1']], 1):>14s} {fmt([100 * x for x in m_['r1']], 1):>14s} "
            f"{fmt(g_['map'], 3):>14s} {fmt(m_['map'], 3):>14s} "
            f"{d['mean']:+.3f} ± {d['std']:.3f} ({d['positive']}/{d['n']})"
        )
        out[str(f)] = {
            "gram": {k: summary(v) for k, v in g_.items()},
            "mover": {k: summary(v) for k, v in m_.items()},
            "map_mover_minus_gram": d,
        }
    out["raw"] = {a: {str(f): v for f, v in r.items()} for a, r in res.items()}
    return out


def plot(r, plt, save) -> None:
    fig, ax = plt.subplots(figsize=(4.2, 3.2))
    fr = r["fractions"]
    for arm in ("gram", "mover"):
        ax.errorbar(
            fr,
            [r[str(f)][arm]["map"]["mean"] for f in fr],
            yerr=[r[str(f)][arm]["map"]["std"] for f in fr],
            marker="o",
            label=arm,
            capsize=2,
        )
    ax.set_xlabel("share of shuffled training positives")
    ax.set_ylabel("retrieval mAP (held out)")
    ax.legend(fontsize=8)
    save(fig, "e5_retrieval.png")
