"""The papers' claims, tested on simulated robot data (issue 6): E1-E5, several seeds, paired differences.

Data. Short MuJoCo episodes of the simulated arm (press and push a box) are recorded as rosbag2 with
:func:`core.sim.record.record_episode` and replayed through the node's own window pipeline
(:func:`core.dataset.iter_windows`), once, into a cache. Frames are downsampled to ``IMAGE`` pixels
once so that hundreds of short training runs fit on a 2-core CPU; everything after that is the real
path: :class:`core.models.MultimodalModel`, the objectives of :mod:`core.objectives` and
:func:`core.train.train_step`. The last ``--test-episodes`` episodes are held out (split by episode,
never by window).

Downstream metrics (on frozen embeddings of the held-out episodes, probes fit on the training ones):
end-effector position error in mm (closed-form ridge regression on the fused embedding), contact
accuracy (:func:`core.metrics.linear_probe_accuracy`, labels from :func:`core.evaluation.contact_labels`:
tactile force or the box moving), cross-modal retrieval R@1 and mAP (:func:`core.evaluation.retrieval`,
windows spread evenly in time, since neighbours at 30 Hz are near-duplicates).

Every arm of an experiment gets the same data, steps, batch size, learning rate and seeds; seed ``s``
draws the same batches and the same initial weights in every arm, so differences are paired.

    .venv/bin/python bench/experiments.py --quick            # reduced: under 15 min on the 2-core VM
    .venv/bin/python bench/experiments.py                    # the full run

Prints a table per experiment, writes ``--out`` (JSON and PNG plots) and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from structalign_ros.core.bags import iter_samples
from structalign_ros.core.batch import Batch, to_batch
from structalign_ros.core.config import ModelConfig, StructAlignConfig
from structalign_ros.core.dataset import bag_layout, iter_windows
from structalign_ros.core.evaluation import contact_labels, object_speed, retrieval
from structalign_ros.core.kernels import InputKernels
from structalign_ros.core.metrics import linear_probe_accuracy
from structalign_ros.core.models import ModalitySpec, MultimodalModel
from structalign_ros.core.objectives import GRAM, MOVER, OTM, Objective, PairwiseInfoNCE, UniOMA, build_base
from structalign_ros.core.ot import OTConvergenceWarning
from structalign_ros.core.sim.record import record_episode
from structalign_ros.core.train import seed_everything, train_step

IMAGE = 32  # camera and depth side after the one-off downsampling
RETRIEVAL_WINDOWS = 128  # per held-out set, spread evenly in time (chance R@1 = 1/128)
MODEL = ModelConfig(embed_dim=32, width=8, image_size=IMAGE, pose_head=False)


# ----------------------------------------------------------------------------------------------- data


@dataclass
class Split:
    """Windows of some episodes as one in-memory batch, with labels."""

    batch: Batch
    position: torch.Tensor  # (N, 3) end-effector position, metres
    contact: torch.Tensor  # (N,) int

    def __len__(self) -> int:
        return len(self.batch)


def load_episodes(
    cache: Path, episodes: int, seconds: float, log: Callable[[str], None]
) -> tuple[list[Split], dict[str, str], float]:
    """Record (once) and read ``episodes`` simulated episodes; one :class:`Split` each.

    Returns the splits, modality kinds and the seconds spent recording and reading.
    """
    config = StructAlignConfig()
    kinds = {n: m.kind for n, m in config.modalities.items() if m.enabled}
    start = time.perf_counter()
    out = []
    for e in range(episodes):
        key = hashlib.sha1(f"{e}-{seconds}-{IMAGE}-v3".encode()).hexdigest()[:10]
        tensors = cache / f"episode_{e}_{key}.pt"
        if not tensors.exists():
            bag = cache / f"episode_{e}_{key}"
            if not bag.exists():
                record_episode(bag, config, seed=1000 + e, seconds=seconds)
            items = [(w, p) for w, p in iter_windows([bag], config) if p is not None]
            # the live path's layout, camera and depth at IMAGE x IMAGE (area / nearest resizing)
            frames = {"image": (1, IMAGE, IMAGE, 3), "depth": (1, IMAGE, IMAGE)}
            layout = {
                n: ModalitySpec(spec.kind, frames.get(spec.kind, spec.shape))
                for n, spec in bag_layout([bag], config).items()
            }
            batch = to_batch([w for w, _ in items], layout, [p for _, p in items])
            track = [(t, v[:3]) for _, t, v in iter_samples([bag], {}, None, config.sim.object_pose_topic)]
            speed = object_speed(
                np.array([t for t, _ in track]), np.array([v for _, v in track]), batch.stamps_ns.numpy()
            )
            saved = {
                "inputs": batch.inputs,
                "mask": batch.mask,
                "pose": batch.pose,
                "stamps": batch.stamps_ns,
            }
            torch.save({**saved, "speed": torch.as_tensor(speed)}, tensors)
        saved = torch.load(tensors, weights_only=True)
        batch = Batch(saved["inputs"], saved["mask"], tuple(saved["inputs"]), saved["stamps"], saved["pose"])
        out.append(Split(batch, batch.pose[:, :3].float(), contact_labels(batch, saved["speed"].numpy())))
        log(f"episode {e}: {len(batch)} windows, contact {float(out[-1].contact.float().mean()):.2f}")
    return out, kinds, time.perf_counter() - start


def concat(splits: list[Split]) -> Split:
    b = [s.batch for s in splits]
    batch = Batch(
        {n: torch.cat([x.inputs[n] for x in b]) for n in b[0].modalities},
        torch.cat([x.mask for x in b]),
        b[0].modalities,
        pose=torch.cat([x.pose for x in b]),
    )
    return Split(batch, torch.cat([s.position for s in splits]), torch.cat([s.contact for s in splits]))


# ------------------------------------------------------------------------------------------- training


class ShuffledKernels:
    """E1's control: the input kernels with rows and columns permuted independently per modality, so
    the consensus keeps each modality's spectrum but loses which window is which."""

    def __init__(self, kernels: InputKernels, seed: int) -> None:
        self.kernels = kernels
        self.g = torch.Generator().manual_seed(seed)

    def __call__(self, batch: Batch, rows: torch.Tensor) -> torch.Tensor:
        K = self.kernels(batch, rows)  # (M, n, n)
        out = torch.empty_like(K)
        for m in range(K.shape[0]):
            p = torch.randperm(K.shape[1], generator=self.g)
            out[m] = K[m][p][:, p]
        return out


def unioma(base: str, kinds: dict[str, str], shuffled: bool = False, seed: int = 0) -> Objective:
    kernels = InputKernels(kinds, 16, members=10, max_clusters=4, seed=seed)
    return UniOMA(build_base(base, 0.1), ShuffledKernels(kernels, seed) if shuffled else kernels, alpha=1.0)


Transform = Callable[[Batch, torch.Generator], Batch]


@dataclass
class Budget:
    """What every arm gets."""

    steps: int
    batch: int
    lr: float = 3e-3
    lambda_lr: float = 3e-2  # modality logits: AdamW moves a parameter by ~lr per step, see E2


def train_arm(
    objective: Objective,
    data: Split,
    kinds: dict[str, str],
    budget: Budget,
    seed: int,
    transform: Transform | None = None,
) -> MultimodalModel:
    """Train a fresh model (initial weights and batches drawn from ``seed``) with ``objective``."""
    seed_everything(seed)
    model = MultimodalModel(ModalitySpec.from_batch(data.batch, kinds), MODEL)
    model.fit_input_stats(data.batch.select(torch.arange(min(len(data), 512))))
    logits = [model.modality_logits]
    rest = [p for p in model.parameters() if p is not model.modality_logits]
    opt = torch.optim.AdamW(
        [
            {"params": rest + list(objective.parameters()), "lr": budget.lr},
            {"params": logits, "lr": budget.lambda_lr, "weight_decay": 0.0},
        ],
        weight_decay=1e-4,
    )
    g = torch.Generator().manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OTConvergenceWarning)
        for _ in range(budget.steps):
            batch = data.batch.select(torch.randperm(len(data), generator=g)[: budget.batch])
            if transform is not None:
                batch = transform(batch, g)
            train_step(model, batch, opt, objective, grad_clip=1.0, amp=False)
    model.eval()
    return model


@torch.no_grad()
def embed(model: MultimodalModel, batch: Batch, chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """``(fused (N, d), embeddings (N, M, d))`` of a batch, in eval mode."""
    fused, per = [], []
    for i in range(0, len(batch), chunk):
        b = batch.select(torch.arange(i, min(i + chunk, len(batch))))
        out = model(b.inputs, b.mask)
        fused.append(out.fused)
        per.append(out.embeddings)
    return torch.cat(fused), torch.cat(per)


# -------------------------------------------------------------------------------------------- metrics


def ridge_predict(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, ridge: float = 1e-2):
    """Closed-form ridge regression (with bias) fit on ``train``, predictions for ``test_x``."""

    def design(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.double(), torch.ones(x.shape[0], 1, dtype=torch.float64)], 1)

    X = design(train_x)
    W = torch.linalg.solve(X.T @ X + ridge * torch.eye(X.shape[1], dtype=X.dtype), X.T @ train_y.double())
    return design(test_x) @ W


def ee_error_mm(train_x, train_pos, test_x, test_pos) -> float:
    """Mean Euclidean end-effector position error of a ridge probe, in mm."""
    pred = ridge_predict(train_x, train_pos, test_x)
    return float((pred - test_pos.double()).norm(dim=1).mean() * 1000.0)


def downstream(model: MultimodalModel, train: Split, test: Split) -> dict[str, float]:
    """EE error (mm) and contact accuracy of probes on the fused embedding."""
    ftr, _ = embed(model, train.batch)
    fte, _ = embed(model, test.batch)
    return {
        "ee_mm": ee_error_mm(ftr, train.position, fte, test.position),
        "contact_acc": linear_probe_accuracy(ftr, train.contact, fte, test.contact),
    }


# ------------------------------------------------------------------------------ corruption and shuffles


class Corruptor:
    """E2's corruptions of one modality at severity ``s`` in ``[0, 1]`` (0 = clean), per batch.

    - ``noise``: ``(1 - s) x + s xi``, ``xi`` Gaussian with the modality's per-element mean and std
      over the training set (at ``s = 1`` pure noise with the same marginals);
    - ``shuffle``: a share ``s`` of the windows carry this modality from another window of the batch
      (out of time, pairing broken);
    - ``constant``: ``(1 - s) x + s mean`` (at ``s = 1`` a constant signal).
    """

    KINDS = ("noise", "shuffle", "constant")

    def __init__(self, data: Split) -> None:
        self.stats = {}
        for name, x in data.batch.inputs.items():
            xf = x.float()
            self.stats[name] = (xf.mean(0), xf.std(0))

    def __call__(self, batch: Batch, name: str, kind: str, s: float, g: torch.Generator) -> Batch:
        if s <= 0:
            return batch
        x = batch.inputs[name]
        xf = x.float()
        mean, std = self.stats[name]
        if kind == "noise":
            out = (1 - s) * xf + s * (mean + std * torch.randn(xf.shape, generator=g))
        elif kind == "constant":
            out = (1 - s) * xf + s * mean
        elif kind == "shuffle":
            out = xf.clone()
            rows = torch.nonzero(torch.rand(len(x), generator=g) < s).squeeze(1)
            out[rows] = xf[rows[torch.randperm(len(rows), generator=g)]]
        else:
            raise ValueError(kind)
        if x.dtype == torch.uint8:
            out = out.round().clamp(0, 255).to(torch.uint8)
        inputs = {**batch.inputs, name: out.to(x.dtype)}
        return Batch(inputs, batch.mask, batch.modalities, batch.stamps_ns, batch.pose)


def shuffle_pairs(batch: Batch, g: torch.Generator, frac: float, anchor: int = 0) -> Batch:
    """Unaligned training pairs: in a share ``frac`` of the windows, every modality but the anchor is
    permuted among those windows, independently per modality."""
    rows = torch.nonzero(torch.rand(len(batch), generator=g) < frac).squeeze(1)
    if len(rows) < 2:
        return batch
    inputs, mask = dict(batch.inputs), batch.mask.clone()
    for m, name in enumerate(batch.modalities):
        if m == anchor:
            continue
        p = rows[torch.randperm(len(rows), generator=g)]
        x = inputs[name].clone()
        x[rows] = inputs[name][p]
        inputs[name] = x
        mask[rows, m] = batch.mask[p, m]
    return Batch(inputs, mask, batch.modalities, batch.stamps_ns, batch.pose)


def without(batch: Batch, name: str) -> Batch:
    """The batch with modality ``name`` missing (zeros, mask False), as the window pipeline delivers it."""
    m = batch.modalities.index(name)
    mask = batch.mask.clone()
    mask[:, m] = False
    inputs = {**batch.inputs, name: torch.zeros_like(batch.inputs[name])}
    return Batch(inputs, mask, batch.modalities, batch.stamps_ns, batch.pose)


# ---------------------------------------------------------------------------------------- statistics


def summary(values: list[float]) -> dict[str, float]:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": sd}


def fmt(values: list[float], digits: int = 2) -> str:
    s = summary(values)
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def paired(a: list[float], b: list[float]) -> dict[str, float]:
    """Paired difference ``a - b`` over seeds: mean, std, and how many seeds have ``a > b``."""
    d = [x - y for x, y in zip(a, b, strict=True)]
    return {**summary(d), "positive": sum(v > 0 for v in d), "n": len(d)}


def spearman(x: list[float], y: list[float]) -> float:
    from scipy.stats import spearmanr

    rho = spearmanr(x, y).statistic
    return float(rho) if math.isfinite(rho) else 0.0


# ------------------------------------------------------------------------------------------ experiments


@dataclass
class Setup:
    train: Split
    test: Split
    kinds: dict[str, str]
    seeds: list[int]
    log: Callable[[str], None]


def e1(su: Setup, budget: Budget) -> dict:
    """UniOMA Table I: +GW against each base objective, with shuffled input kernels as a control."""
    arms = ("base", "gw", "gw_shuffled")
    res: dict[str, dict[str, dict[str, list[float]]]] = {}
    for base in ("pairwise", "symile", "gram"):
        res[base] = {a: {"ee_mm": [], "contact_acc": []} for a in arms}
        for seed in su.seeds:
            for arm in arms:
                if arm == "base":
                    obj = build_base(base, 0.1)
                else:
                    obj = unioma(base, su.kinds, shuffled=arm == "gw_shuffled", seed=seed)
                model = train_arm(obj, su.train, su.kinds, budget, seed)
                for k, v in downstream(model, su.train, su.test).items():
                    res[base][arm][k].append(v)
            su.log(f"E1 {base} seed {seed} done")
    untrained = {"ee_mm": [], "contact_acc": []}
    for seed in su.seeds:  # the initial weights every arm of this seed starts from
        for k, v in downstream(
            train_arm(build_base("pairwise", 0.1), su.train, su.kinds, Budget(0, 1), seed), su.train, su.test
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


def e2(su: Setup, budget: Budget, severities: list[float]) -> dict:
    """UniOMA Fig. 2: lambda of a modality against its corruption severity, each modality in turn."""
    corrupt = Corruptor(su.train)
    names = su.train.batch.modalities
    lam: dict[str, dict[str, dict[float, list[float]]]] = {
        n: {k: {0.0: []} | {s: [] for s in severities} for k in Corruptor.KINDS} for n in names
    }
    for seed in su.seeds:
        clean = train_arm(unioma("pairwise", su.kinds, seed=seed), su.train, su.kinds, budget, seed)
        clean_lam = model_lambdas(clean)
        for n in names:
            for k in Corruptor.KINDS:
                lam[n][k][0.0].append(clean_lam[names.index(n)])
        for n in names:
            for k in Corruptor.KINDS:
                for s in severities:

                    def transform(b, g, n=n, k=k, s=s):
                        return corrupt(b, n, k, s, g)

                    obj = unioma("pairwise", su.kinds, seed=seed)
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


def model_lambdas(model: MultimodalModel) -> list[float]:
    return torch.softmax(model.modality_logits.detach(), 0).tolist()


def e3(su: Setup, n: int, repeats: int) -> dict:
    """The structural term's wall-clock against M = 2..7: barycenter route vs all pairs of GW."""
    sys.path.insert(0, str(Path(__file__).parent))
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


def e4(su: Setup, budget: Budget, modalities: list[str], frac: float) -> dict:
    """OTM: with and without the mixer when a modality is missing or noisy at test time, and with
    partly shuffled (unaligned) training pairs."""
    corrupt = Corruptor(su.train)
    ftr_clean = {}
    res: dict[str, dict[str, list[float]]] = {}

    def add(key: str, value: float) -> None:
        res.setdefault(key, []).append(value)

    m_ = len(su.train.batch.modalities)
    d = MODEL.embed_dim
    for seed in su.seeds:
        models = {
            "pairwise": (train_arm(PairwiseInfoNCE(temperature=0.1), su.train, su.kinds, budget, seed), None),
        }
        otm = OTM(m_, d)
        models["otm"] = (train_arm(otm, su.train, su.kinds, budget, seed), otm)
        g = torch.Generator().manual_seed(10_000 + seed)
        for arm, (model, obj) in models.items():
            ftr, _ = embed(model, su.train.batch)
            ftr_clean[arm] = ftr
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
            ("pairwise", PairwiseInfoNCE(temperature=0.1)),
            ("otm", OTM(m_, d)),
            ("otm_unaligned", OTM(m_, d, aligned=False)),
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


def e5(su: Setup, budget: Budget, fracs: list[float]) -> dict:
    """MOVER: cross-modal retrieval under a share of shuffled positives, against GRAM."""
    names = su.train.batch.modalities
    res: dict[str, dict[float, dict[str, list[float]]]] = {
        a: {f: {"r1": [], "map": []} for f in fracs} for a in ("gram", "mover")
    }
    for seed in su.seeds:
        for f in fracs:

            def transform(b, g, f=f):
                return shuffle_pairs(b, g, f)

            for arm, obj in (("gram", GRAM(temperature=0.1)), ("mover", MOVER(paired=False))):
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


# ---------------------------------------------------------------------------------------------- plots


def plots(results: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(str(out / name))

    if "E1" in results:
        plot_e1(results["E1"], plt, save)
    if "E2" in results:
        plot_e2(results["E2"], plt, save)
    if "E3" in results:
        plot_e3(results["E3"], plt, save)
    if "E4" in results:
        plot_e4(results["E4"]["ee_mm"], plt, save)
    if "E5" in results:
        plot_e5(results["E5"], plt, save)
    return written


def plot_e1(r, plt, save) -> None:
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


def plot_e2(e2, plt, save) -> None:
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


def plot_e3(r, plt, save) -> None:
    fig, ax = plt.subplots(figsize=(4.2, 3.2))
    ax.loglog(r["m"], r["barycenter_ms"], "o-", label=f"barycenter (slope {r['slope_barycenter']:.2f})")
    ax.loglog(r["m"], r["pairwise_gw_ms"], "s-", label=f"pairwise GW (slope {r['slope_pairwise']:.2f})")
    ax.set_xticks(r["m"], [str(m) for m in r["m"]])
    ax.set_xlabel("modalities M")
    ax.set_ylabel(f"ms per step (n = {r['n']})")
    ax.legend(fontsize=8)
    save(fig, "e3_scaling.png")


def plot_e4(r, plt, save) -> None:
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


def plot_e5(r, plt, save) -> None:
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


# ----------------------------------------------------------------------------------------------- main

QUICK = {
    "episodes": 4, "seconds": 12.0, "test_episodes": 1, "seeds": 5, "batch": 48,
    "e1_steps": 30, "e2_steps": 15, "e2_batch": 32, "severities": [1.0], "e3_n": 64, "e3_repeats": 2,
    "e4_steps": 30, "e4_modalities": ["joints"], "e4_frac": 0.5, "e5_steps": 30, "e5_fracs": [0.0, 0.5],
}  # fmt: skip
FULL = {
    "episodes": 6, "seconds": 15.0, "test_episodes": 2, "seeds": 5, "batch": 64,
    "e1_steps": 80, "e2_steps": 30, "e2_batch": 48, "severities": [1.0], "e3_n": 128,
    "e3_repeats": 3, "e4_steps": 80, "e4_modalities": ["rgb", "depth", "wrench", "imu", "tactile", "joints"],
    "e4_frac": 0.5, "e5_steps": 150, "e5_fracs": [0.0, 0.25, 0.5],
}  # fmt: skip


def compact(results: dict) -> dict:
    """The headline numbers for the final JSON line (everything else is in results.json)."""
    e1 = {}
    for base, r in results["E1"].items():
        if base == "untrained":
            e1[base] = {k: round(v["mean"], 4) for k, v in r.items()}
            continue
        e1[base] = {
            "ee_mm": {a: round(r[a]["ee_mm"]["mean"], 2) for a in ("base", "gw", "gw_shuffled")},
            "contact_acc": {a: round(r[a]["contact_acc"]["mean"], 4) for a in ("base", "gw", "gw_shuffled")},
            "ee_base_minus_gw": round(r["ee_base_minus_gw"]["mean"], 2),
            "ee_base_minus_gw_std": round(r["ee_base_minus_gw"]["std"], 2),
            "contact_gw_minus_base": round(r["contact_gw_minus_base"]["mean"], 4),
        }
    e3 = results["E3"]
    e4 = {k: round(v["mean"], 2) for k, v in results["E4"]["ee_mm"].items()}
    e4 |= {f"paired {k}": round(v["mean"], 2) for k, v in results["E4"]["paired_mm"].items()}
    e5 = {}
    for f in results["E5"]["fractions"]:
        r = results["E5"][str(f)]
        e5[str(f)] = {
            "map_gram": round(r["gram"]["map"]["mean"], 4),
            "map_mover": round(r["mover"]["map"]["mean"], 4),
            "r1_gram": round(r["gram"]["r1"]["mean"], 4),
            "r1_mover": round(r["mover"]["r1"]["mean"], 4),
            "map_mover_minus_gram": round(r["map_mover_minus_gram"]["mean"], 4),
        }
    return {
        "E1": e1,
        "E2": {"spearman": {k: round(v, 3) for k, v in results["E2"]["spearman"].items()}},
        "E3": {
            "slope_barycenter": round(e3["slope_barycenter"], 3),
            "slope_pairwise": round(e3["slope_pairwise"], 3),
        },
        "E4": e4,
        "E5": e5,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the reduced run (under 15 min on 2 cores)")
    ap.add_argument("--smoke", action="store_true", help="quick, but 3 steps and 2 seeds: checks the script")
    ap.add_argument("--seeds", type=int, help="number of seeds (default 5)")
    ap.add_argument("--only", default="E1,E2,E3,E4,E5", help="comma list of experiments to run")
    ap.add_argument(
        "--cache", default=os.environ.get("STRUCTALIGN_EXPERIMENT_CACHE", "/tmp/structalign_experiments")
    )
    ap.add_argument("--out", help="results folder (default docs/results/quick or docs/results/full)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 on a shared CPU)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = dict(QUICK if args.quick else FULL)
    if args.smoke:
        cfg.update(QUICK, seeds=2, e3_repeats=1, e1_steps=3, e2_steps=3, e4_steps=3, e5_steps=3)
    if args.seeds:
        cfg["seeds"] = args.seeds
    out = Path(
        args.out or Path(__file__).parent.parent / "docs" / "results" / ("quick" if args.quick else "full")
    )
    if args.smoke and not args.out:
        out = Path("/tmp/structalign_experiments_smoke")
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f} s] {msg}", file=sys.stderr, flush=True)

    episodes, kinds, data_s = load_episodes(cache, cfg["episodes"], cfg["seconds"], log)
    k = cfg["test_episodes"]
    su = Setup(concat(episodes[:-k]), concat(episodes[-k:]), kinds, list(range(cfg["seeds"])), log)
    log(f"data: {len(su.train)} training windows, {len(su.test)} held-out windows ({data_s:.1f} s)")
    budget = Budget(cfg["e1_steps"], cfg["batch"])
    only = set(args.only.split(","))
    results: dict = {}
    timings = {}
    for name, run in (
        ("E1", lambda: e1(su, budget)),
        ("E2", lambda: e2(su, Budget(cfg["e2_steps"], cfg["e2_batch"]), cfg["severities"])),
        ("E3", lambda: e3(su, cfg["e3_n"], cfg["e3_repeats"])),
        ("E4", lambda: e4(su, Budget(cfg["e4_steps"], cfg["batch"]), cfg["e4_modalities"], cfg["e4_frac"])),
        ("E5", lambda: e5(su, Budget(cfg["e5_steps"], cfg["batch"]), cfg["e5_fracs"])),
    ):
        if name in only:
            start = time.perf_counter()
            results[name] = run()
            timings[name] = round(time.perf_counter() - start, 1)
            log(f"{name} took {timings[name]} s")
            partial = {"meta": {"config": cfg, "experiment_s": timings, "partial": True}, **results}
            (out / "results.json").write_text(json.dumps(partial, indent=1))  # survives an interrupted run
    wall = time.perf_counter() - t0
    meta = {
        "config": cfg,
        "wall_s": round(wall, 1),
        "data_s": round(data_s, 1),
        "experiment_s": timings,
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.platform()}",
        "load_at_end": os.getloadavg(),
        "torch": torch.__version__,
        "threads": args.threads,
    }
    (out / "results.json").write_text(json.dumps({"meta": meta, **results}, indent=1))
    for path in plots(results, out):
        log(f"wrote {path}")
    if len(results) == 5:
        print(f"\nwall time {wall:.0f} s (data {data_s:.0f} s), load {os.getloadavg()}")
        print(json.dumps(compact(results)))
    else:
        print(json.dumps({k: v for k, v in results.items() if k in ("E3",)} or {"ran": sorted(results)}))


if __name__ == "__main__":
    main()
