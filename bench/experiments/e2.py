"""E2, UniOMA Fig. 2: lambda of a modality against its corruption severity, each modality in turn."""

from __future__ import annotations

import statistics

from .arms import Budget, model_lambdas, objective, train_arm
from .corrupt import Corruptor
from .data import Setup
from .stats import fmt, spearman


def run(su: Setup, budget: Budget, severities: list[float]) -> dict:
    """UniOMA Fig. 2: lambda of a modality against its corruption severity, each modality in turn."""
    corrupt = Corruptor(su.train)
    names = su.train.batch.modalities
    lam: dict[str, dict[str, dict[float, list[float]]]] = {
        n: {k: {0.0: []} | {s: [] for s in severities} for k in Corruptor.KINDS} for n in names
    }
    for seed in su.seeds:
        clean = train_arm(objective("unioma", su.kinds, seed=seed), su.train, su.kinds, budget, seed)
        clean_lam = model_lambdas(clean)
        for n in names:
            for k in Corruptor.KINDS:
                lam[n][k][0.0].append(clean_lam[names.index(n)])
        for n in names:
            for k in Corruptor.KINDS:
                for s in severities:

                    def transform(b, g, n=n, k=k, s=s):
                        return corrupt(b, n, k, s, g)

                    obj = objective("unioma", su.kinds, seed=seed)
                    model = train_arm(obj, su.train, su.kinds, budget, seed, transform)
                    lam[n][k][s].append(model_lambdas(model)[names.index(n)])
        su.log(f"E2 seed {seed} done")
    levels = [0.0, *severities]
    print(
        "\nE2  lambda of the corrupted modality (uniform = %.3f); Spearman rho of lambda vs severity"
        % (1 / len(names))
    )
    head = " ".join(f"{k[:5]}@{s:g}".rjust(14) for k in Corruptor.KINDS for s in severities)
    print(f"{'modality':9s} {'clean':>14s} {head} {'rho':>6s}")
    rhos, table = {}, {}
    for n in names:
        xs, ys = [], []
        for k in Corruptor.KINDS:
            for s in levels:
                xs += [s] * len(lam[n][k][s])
                ys += lam[n][k][s]
        rhos[n] = spearman(xs, ys)
        cells = " ".join(fmt(lam[n][k][s], 3).rjust(14) for k in Corruptor.KINDS for s in severities)
        print(f"{n:9s} {fmt(lam[n]['noise'][0.0], 3):>14s} {cells} {rhos[n]:+6.2f}")
        table[n] = {k: {str(s): lam[n][k][s] for s in levels} for k in Corruptor.KINDS}
    return {"spearman": rhos, "lambdas": table}


def plot(e2, plt, save) -> None:
    r = e2["lambdas"]
    names = list(r)
    fig, axes = plt.subplots(1, len(names), figsize=(2.4 * len(names), 2.8), sharey=True)
    for ax, n in zip(axes, names, strict=True):
        for kind, levels in r[n].items():
            xs = sorted(levels, key=float)
            ax.errorbar(
                [float(s) for s in xs],
                [statistics.fmean(levels[s]) for s in xs],
                yerr=[statistics.stdev(levels[s]) if len(levels[s]) > 1 else 0 for s in xs],
                marker="o",
                label=kind,
                capsize=2,
            )
        ax.axhline(1 / len(names), color="grey", lw=0.5)
        ax.set_title(f"{n} (rho {e2['spearman'][n]:+.2f})", fontsize=9)
        ax.set_xlabel("severity")
    axes[0].set_ylabel("lambda of the corrupted modality")
    axes[0].legend(fontsize=7)
    save(fig, "e2_lambda_vs_corruption.png")
