"""E4, OTM: EE error with and without the mixer when a modality is missing or noisy at test time (and
with the missing one imputed by its decoder), and with partly shuffled (unaligned) training pairs."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from structalign_ros.core.data.batch import Batch
from structalign_ros.core.learn.models import MultimodalModel
from structalign_ros.core.learn.objectives import OTM

from .arms import Budget, objective, train_arm
from .corrupt import Corruptor, shuffle_pairs, without
from .data import Setup
from .probe import downstream, ee_error_mm, embed
from .stats import fmt, paired, summary


@torch.no_grad()
def impute(model: MultimodalModel, otm: OTM, batch: Batch, name: str, chunk: int = 64) -> torch.Tensor:
    """Fused embeddings with modality ``name`` (missing) replaced by the OTM decoder's reconstruction
    from the FGW mix of the others (paired test windows: the aligned mixer)."""
    k = batch.modalities.index(name)
    lam = torch.softmax(model.modality_logits, 0)
    keep = torch.ones(len(batch.modalities), dtype=torch.bool)
    keep[k] = False
    otm.eval()
    fused = []
    for i in range(0, len(batch), chunk):
        b = batch.select(torch.arange(i, min(i + chunk, len(batch))))
        z = model(b.inputs, b.mask).embeddings  # (n, M, d)
        X, _ = otm.mix(z.transpose(0, 1), lam, keep)
        z = z.clone()
        z[:, k] = F.normalize(otm.decoders[k](X), dim=-1)
        present = b.mask.clone()
        present[:, k] = True
        w = lam * present  # (n, M)
        w = w / w.sum(1, keepdim=True)
        fused.append(F.normalize((w.unsqueeze(-1) * z).sum(1), dim=-1))
    return torch.cat(fused)


def run(su: Setup, budget: Budget, modalities: list[str], frac: float) -> dict:
    """OTM: with and without the mixer when a modality is missing or noisy at test time, and with
    partly shuffled (unaligned) training pairs."""
    corrupt = Corruptor(su.train)
    res: dict[str, dict[str, list[float]]] = {}

    def add(key: str, value: float) -> None:
        res.setdefault(key, []).append(value)

    for seed in su.seeds:
        models = {
            "pairwise": (train_arm(objective("pairwise", su.kinds), su.train, su.kinds, budget, seed), None),
        }
        otm = objective("otm", su.kinds)
        models["otm"] = (train_arm(otm, su.train, su.kinds, budget, seed), otm)
        g = torch.Generator().manual_seed(10_000 + seed)
        for arm, (model, obj) in models.items():
            ftr, _ = embed(model, su.train.batch)
            fte, _ = embed(model, su.test.batch)
            add(f"{arm}|clean", ee_error_mm(ftr, su.train.position, fte, su.test.position))
            for n in modalities:
                fm, _ = embed(model, without(su.test.batch, n))
                add(f"{arm}|missing {n}", ee_error_mm(ftr, su.train.position, fm, su.test.position))
                noisy = corrupt(su.test.batch, n, "noise", 1.0, g)
                fn, _ = embed(model, noisy)
                add(f"{arm}|noisy {n}", ee_error_mm(ftr, su.train.position, fn, su.test.position))
                if obj is not None:
                    fi = impute(model, obj, without(su.test.batch, n), n)
                    add(
                        f"{arm}+impute|missing {n}", ee_error_mm(ftr, su.train.position, fi, su.test.position)
                    )

        def unaligned(b, g):
            return shuffle_pairs(b, g, frac)

        for arm, obj in (
            ("pairwise", objective("pairwise", su.kinds)),
            ("otm", objective("otm", su.kinds)),
            ("otm_unaligned", objective("otm", su.kinds, aligned=False)),
        ):
            model = train_arm(obj, su.train, su.kinds, budget, seed, unaligned)
            for k, v in downstream(model, su.train, su.test).items():
                add(f"{arm}|shuffled {frac:g} train: {k}", v)
        su.log(f"E4 seed {seed} done")
    print("\nE4  OTM: EE error mm on held-out episodes (probe fit on clean training embeddings)")
    for key, v in res.items():
        arm, cond = key.split("|")
        scale = 100 if key.endswith("contact_acc") else 1
        print(f"{cond:40s} {arm:16s} {fmt([scale * x for x in v], 1):>14s}")
    diffs = {}
    for n in modalities:
        for cond in (f"missing {n}", f"noisy {n}"):
            diffs[f"{cond}: pairwise - otm"] = paired(res[f"pairwise|{cond}"], res[f"otm|{cond}"])
        diffs[f"missing {n}: pairwise - otm+impute"] = paired(
            res[f"pairwise|missing {n}"], res[f"otm+impute|missing {n}"]
        )
        diffs[f"missing {n}: otm - otm+impute"] = paired(
            res[f"otm|missing {n}"], res[f"otm+impute|missing {n}"]
        )
    t = f"shuffled {frac:g} train: ee_mm"
    diffs[f"{t}: otm - otm_unaligned"] = paired(res[f"otm|{t}"], res[f"otm_unaligned|{t}"])
    diffs[f"{t}: pairwise - otm_unaligned"] = paired(res[f"pairwise|{t}"], res[f"otm_unaligned|{t}"])
    for k, v in diffs.items():
        print(f"paired {k:55s} {v['mean']:+7.1f} ± {v['std']:.1f} mm ({v['positive']}/{v['n']} seeds > 0)")
    return {"ee_mm": {k: summary(v) for k, v in res.items()}, "paired_mm": diffs, "raw": res}


def plot(r, plt, save) -> None:
    conds = list(dict.fromkeys(k.split("|")[1] for k in r if "train:" not in k))
    arms4 = list(dict.fromkeys(k.split("|")[0] for k in r if "train:" not in k))
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(conds)), 3.4))
    width = 0.8 / len(arms4)
    for j, arm in enumerate(arms4):
        xs = [i + width * (j - (len(arms4) - 1) / 2) for i in range(len(conds))]
        ys = [r.get(f"{arm}|{c}", {"mean": float("nan")})["mean"] for c in conds]
        es = [r.get(f"{arm}|{c}", {"std": 0})["std"] for c in conds]
        ax.bar(xs, ys, width, yerr=es, label=arm, capsize=2)
    ax.set_xticks(range(len(conds)), conds, rotation=20, fontsize=8)
    ax.set_ylabel("EE error (mm)")
    ax.legend(fontsize=8)
    ax.set_title("E4: missing / noisy modality at test time")
    save(fig, "e4_otm_robustness.png")
