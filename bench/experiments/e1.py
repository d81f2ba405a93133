"""E1, UniOMA Table I: the GW regulariser against each base objective, with shuffled input kernels as
a control; EE error and contact accuracy of probes on held-out episodes."""

from __future__ import annotations

from .arms import Budget, objective, train_arm
from .data import Setup
from .probe import downstream
from .stats import fmt, paired, summary


def run(su: Setup, budget: Budget) -> dict:
    """UniOMA Table I: +GW against each base objective, with shuffled input kernels as a control."""
    arms = ("base", "gw", "gw_shuffled")
    res: dict[str, dict[str, dict[str, list[float]]]] = {}
    for base in ("pairwise", "symile", "gram"):
        res[base] = {a: {"ee_mm": [], "contact_acc": []} for a in arms}
        for seed in su.seeds:
            for arm in arms:
                if arm == "base":
                    obj = objective(base, su.kinds)
                else:
                    obj = objective("unioma", su.kinds, base=base, seed=seed, shuffled=arm == "gw_shuffled")
                model = train_arm(obj, su.train, su.kinds, budget, seed)
                for k, v in downstream(model, su.train, su.test).items():
                    res[base][arm][k].append(v)
            su.log(f"E1 {base} seed {seed} done")
    untrained = {"ee_mm": [], "contact_acc": []}
    for seed in su.seeds:  # the initial weights every arm of this seed starts from
        for k, v in downstream(
            train_arm(objective("pairwise", su.kinds), su.train, su.kinds, Budget(0, budget.batch), seed),
            su.train,
            su.test,
        ).items():
            untrained[k].append(v)
    print("\nE1  +GW regulariser against each base objective (held-out episodes; mean ± std over seeds)")
    acc0 = [100 * a for a in untrained["contact_acc"]]
    print(f"{'(none)':9s} {'untrained':12s} {fmt(untrained['ee_mm'], 1):>20s} {fmt(acc0, 1):>23s}")
    print(f"{'base':9s} {'arm':12s} {'EE error mm (lower)':>20s} {'contact acc % (higher)':>23s}")
    out = {}
    for base, arms_ in res.items():
        for arm, m in arms_.items():
            acc = [100 * a for a in m["contact_acc"]]
            print(f"{base:9s} {arm:12s} {fmt(m['ee_mm'], 1):>20s} {fmt(acc, 1):>23s}")
        d_ee = paired(arms_["base"]["ee_mm"], arms_["gw"]["ee_mm"])  # > 0: GW lowers the error
        d_acc = paired(arms_["gw"]["contact_acc"], arms_["base"]["contact_acc"])
        c_ee = paired(arms_["gw_shuffled"]["ee_mm"], arms_["gw"]["ee_mm"])
        c_acc = paired(arms_["gw"]["contact_acc"], arms_["gw_shuffled"]["contact_acc"])
        print(
            f"{base:9s} paired: EE base-GW {d_ee['mean']:+.1f} ± {d_ee['std']:.1f} mm "
            f"({d_ee['positive']}/{d_ee['n']} seeds GW better), contact GW-base "
            f"{100 * d_acc['mean']:+.1f} ± {100 * d_acc['std']:.1f} pts ({d_acc['positive']}/{d_acc['n']}); "
            f"EE shuffled-GW {c_ee['mean']:+.1f} ± {c_ee['std']:.1f} mm ({c_ee['positive']}/{c_ee['n']})"
        )
        out[base] = {
            **{a: {k: summary(v) for k, v in m.items()} for a, m in arms_.items()},
            "ee_base_minus_gw": d_ee,
            "contact_gw_minus_base": d_acc,
            "ee_shuffled_minus_gw": c_ee,
            "contact_gw_minus_shuffled": c_acc,
            "raw": arms_,
        }
    out["untrained"] = {k: summary(v) for k, v in untrained.items()}
    return out


def plot(r, plt, save) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    arms = ("base", "gw", "gw_shuffled")
    for ax, key, label in (
        (axes[0], "ee_mm", "EE error (mm, lower)"),
        (axes[1], "contact_acc", "contact acc (higher)"),
    ):
        for j, arm in enumerate(arms):
            xs = [i + 0.27 * (j - 1) for i in range(3)]
            ys = [r[b][arm][key]["mean"] for b in ("pairwise", "symile", "gram")]
            es = [r[b][arm][key]["std"] for b in ("pairwise", "symile", "gram")]
            ax.bar(xs, ys, 0.25, yerr=es, label=arm, capsize=2)
        ax.set_xticks(range(3), ["pairwise", "symile", "gram"])
        ax.set_ylabel(label)
    if key == "contact_acc":
        lo = min(r[b][a][key]["mean"] for b in ("pairwise", "symile", "gram") for a in arms)
        axes[1].set_ylim(max(0.0, lo - 0.05), 1.0)
    if "untrained" in r:
        axes[0].axhline(r["untrained"]["ee_mm"]["mean"], color="grey", ls="--", lw=1, label="untrained")
    axes[0].legend(fontsize=8)
    fig.suptitle("E1: +GW regulariser vs base objective (mean ± std over seeds)")
    save(fig, "e1_gw_regulariser.png")
