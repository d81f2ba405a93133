"""Evaluation of a trained model on windows: what ``structalign eval`` reports and the experiments import.

Stable API (``bench/experiments`` builds on it):

- :func:`contact_labels` - ground-truth contact per window from the simulated data.
- :func:`object_speed` - the pushed object's speed at given stamps, from its ground-truth track.
- :func:`pose_errors` - end-effector position error (mm) and orientation error (deg).
- :func:`contact_probe` - contact accuracy of a linear probe (``metrics.linear_probe_accuracy``) on
  frozen features, fitted on some episodes and tested on the others.
- :func:`retrieval` - cross-modal retrieval mAP and R@1 for every ordered modality pair.
- :func:`geometry` - GOTMA's neighbourhood preservation and GW manifold discrepancy for every pair.
- :func:`collect` - run a model (or a :class:`runtime.Predictor`) over batches, keep what the
  metrics need; :func:`evaluate` composes everything into one JSON-ready dict.

Contact ground truth. The simulated task alternates free motion, pressing the box top with the
tactile pad, and pushing the box with the pad's side (``core/sim/controller.py``). Two signals in
the recorded data identify contact, and each misses one of the two contact phases:

- the tactile pad's summed normal force: MuJoCo touch sensors over the pad, ~20 N while pressing,
  a noise floor of ~0.05-0.1 N (16 taxels) in free motion; but a push with the pad's *side* often
  leaves the taxels at the noise floor;
- the object's speed from its ground-truth pose (``sim.object_pose_topic``): 20-110 mm/s while
  pushed, 0 otherwise (only the arm moves the box; pressing shakes it by < 8 mm/s).

A window is "in contact" when the summed tactile force exceeds :data:`CONTACT_FORCE_N` in any of
its time bins, or the object moves faster than :data:`CONTACT_SPEED_MPS` at the window's stamp.
The tactile signal is a model input, so a probe on the tactile embedding alone has an easy job;
the fused embedding and the other modalities are the interesting rows.

Retrieval and near-duplicates. Consecutive windows at 30 Hz overlap and look alike, so retrieving
the exact paired window among neighbours in time is hard even for a perfect model; retrieval is
computed on windows subsampled evenly in time (``max_windows``) and reported with the chance level.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from structalign_ros.core.data.batch import Batch
from structalign_ros.core.eval.metrics import (
    linear_probe_accuracy,
    neighbourhood_preservation,
)
from structalign_ros.core.learn.models import ModelOutput, MultimodalModel
from structalign_ros.core.learn.rotations import geodesic_angle, quaternion_to_matrix, rotation_6d_to_matrix

# Summed taxel force (N) above which the pad touches something: ~5x the 16-taxel noise floor.
CONTACT_FORCE_N = 0.5
# Object speed (m/s) above which it is being pushed: above the < 8 mm/s shaking of a press.
CONTACT_SPEED_MPS = 0.01
# Retrieval's R@1_tol counts a gallery window this close in time (same episode) as a hit.
RETRIEVAL_TOLERANCE_NS = 250_000_000
# Half-width of the central difference used for the object speed.
SPEED_HALF_SPAN_NS = 25_000_000


def object_speed(track_ns: np.ndarray, track_xyz: np.ndarray, stamps_ns: np.ndarray) -> np.ndarray:
    """Speed (m/s) of a tracked object at ``stamps_ns``, by a central difference over +-25 ms.

    Args:
        track_ns: ``(K,)`` increasing stamps of the ground-truth pose; track_xyz: ``(K, 3)`` metres.
        stamps_ns: ``(N,)`` where to evaluate (e.g. window pivot stamps).

    Returns:
        ``(N,)`` float; 0 where the track has fewer than two samples.
    """
    stamps = np.asarray(stamps_ns, dtype=np.int64)
    if len(track_ns) < 2:
        return np.zeros(len(stamps))
    t = np.asarray(track_ns, dtype=np.float64)
    lo = np.clip(stamps - SPEED_HALF_SPAN_NS, t[0], t[-1]).astype(np.float64)
    hi = np.clip(stamps + SPEED_HALF_SPAN_NS, t[0], t[-1]).astype(np.float64)
    at = lambda s: np.stack([np.interp(s, t, track_xyz[:, k]) for k in range(3)], axis=1)  # noqa: E731
    dist = np.linalg.norm(at(hi) - at(lo), axis=1)
    return np.where(hi > lo, dist / np.maximum(hi - lo, 1.0) * 1e9, 0.0)


def contact_labels(
    batch: Batch,
    speed: Tensor | np.ndarray | None = None,
    *,
    tactile: str = "tactile",
    force_n: float = CONTACT_FORCE_N,
    speed_mps: float = CONTACT_SPEED_MPS,
) -> Tensor:
    """Ground-truth contact per window, ``(B,)`` long, 1 = in contact (see the module docstring).

    Args:
        batch: windows; its ``tactile`` modality ``(B, T, H, W)`` (newtons per taxel) is read where
            present (a masked tactile entry counts as no force).
        speed: ``(B,)`` object speed (m/s) at each window, e.g. from :func:`object_speed`; None uses
            the tactile force alone.
        tactile: name of the tactile modality in ``batch``.
        force_n, speed_mps: the thresholds.

    Raises:
        ValueError: neither a tactile modality nor ``speed`` to decide from.
    """
    b = len(batch)
    contact = torch.zeros(b, dtype=torch.bool)
    if tactile in batch.modalities:
        present = batch.mask[:, batch.modalities.index(tactile)].cpu()
        force = batch.inputs[tactile].float().cpu().flatten(2).sum(-1).amax(1)  # (B,) max over bins
        contact |= present & (force > force_n)
    elif speed is None:
        raise ValueError(f"no {tactile!r} modality in the batch and no object speed: no contact signal")
    if speed is not None:
        contact |= torch.as_tensor(np.asarray(speed), dtype=torch.float64) > speed_mps
    return contact.long()


def pose_errors(pred: Tensor, target: Tensor) -> dict[str, float]:
    """End-effector pose errors of the model's pose head.

    Args:
        pred: ``(N, 9)`` ``[x, y, z, r6]`` (``ModelOutput.pose``); target: ``(N, 7)``
            ``[x, y, z, qx, qy, qz, qw]``.

    Returns:
        ``position_mm_mean``/``_median`` (Euclidean distance), ``orientation_deg_mean``/``_median``
        (geodesic angle) and ``n``.
    """
    pred, target = pred.double(), target.double()
    pos = (pred[:, :3] - target[:, :3]).norm(dim=-1) * 1e3
    rot = geodesic_angle(rotation_6d_to_matrix(pred[:, 3:]), quaternion_to_matrix(target[:, 3:])).rad2deg()
    return {
        "position_mm_mean": float(pos.mean()),
        "position_mm_median": float(pos.median()),
        "orientation_deg_mean": float(rot.mean()),
        "orientation_deg_median": float(rot.median()),
        "n": len(pos),
    }


def mean_average_precision(query: Tensor, gallery: Tensor) -> float:
    """Cross-modal retrieval mAP with row ``i`` of ``gallery`` the one relevant item of query ``i``.

    With a single relevant item, average precision is ``1 / rank`` of that item (cosine similarity,
    ties counted against the query), so mAP is the mean reciprocal rank.

    Args:
        query, gallery: ``(N, D)`` embeddings of the same N windows.
    """
    sims = F.normalize(query.double(), dim=-1) @ F.normalize(gallery.double(), dim=-1).T  # (N, N)
    rank = (sims >= sims.diagonal().unsqueeze(1)).sum(1).double()  # 1 = best
    return float((1.0 / rank).mean())


def _even(n: int, limit: int) -> Tensor:
    """Indices of at most ``limit`` of ``n`` items, spread evenly (time order kept)."""
    if n <= limit:
        return torch.arange(n)
    return torch.linspace(0, n - 1, limit).round().long().unique()


def retrieval(
    embeddings: Tensor,
    mask: Tensor,
    modalities: Sequence[str],
    max_windows: int = 512,
    *,
    stamps_ns: Tensor | None = None,
    groups: Tensor | None = None,
    tolerance_ns: int = RETRIEVAL_TOLERANCE_NS,
) -> dict[str, dict[str, float]]:
    """mAP and R@1 for every ordered pair ``query->gallery`` over the windows where both are present.

    Args:
        embeddings: ``(N, M, d)``; mask: ``(N, M)`` bool; modalities: the M names.
        max_windows: windows used per pair, spread evenly in time (see the module docstring).
        stamps_ns, groups: ``(N,)`` window stamps and episode indices; with them, ``R@1_tol`` also
            counts a retrieved window of the same episode within ``tolerance_ns`` of the query as a
            hit (the same moment of the task, not only the same window).

    Returns:
        ``{"a->b": {"mAP", "R@1", "n", "chance_R@1"[, "R@1_tol"]}}``.
    """
    out: dict[str, dict[str, float]] = {}
    for a, b in itertools.permutations(range(len(modalities)), 2):
        rows = (mask[:, a] & mask[:, b]).nonzero().squeeze(1)
        rows = rows[_even(len(rows), max_windows)]
        if len(rows) < 2:
            continue
        q, g = embeddings[rows, a], embeddings[rows, b]
        sims = F.normalize(q.double(), dim=-1) @ F.normalize(g.double(), dim=-1).T
        best = sims.argmax(1)
        res = {
            "mAP": mean_average_precision(q, g),
            "R@1": float((best == torch.arange(len(rows))).double().mean()),
            "n": len(rows),
            "chance_R@1": 1.0 / len(rows),
        }
        if stamps_ns is not None:
            same = (
                torch.ones(len(rows), dtype=torch.bool)
                if groups is None
                else groups[rows] == groups[rows][best]
            )
            near = (stamps_ns[rows] - stamps_ns[rows][best]).abs() <= tolerance_ns
            res["R@1_tol"] = float((same & near).double().mean())
        out[f"{modalities[a]}->{modalities[b]}"] = res
    return out


def geometry(
    embeddings: Tensor,
    mask: Tensor,
    modalities: Sequence[str],
    k: int = 5,
    max_windows: int = 64,
    gw_iterations: int = 20,
) -> dict[str, dict[str, float]]:
    """GOTMA's neighbourhood preservation and GW manifold discrepancy for every unordered pair.

    Both use the windows in which every modality is present (one sample set, so every pair's GW
    problem has the same size and all pairs are solved as one batch). The GW discrepancy is
    :func:`metrics.gw_manifold_discrepancy`'s quantity (entropic GW between kNN-geodesic distance
    matrices, from the product coupling) in float32 under a fixed budget of ``gw_iterations``
    outer and 50 Sinkhorn iterations: solved to convergence one pair at a time it took 4-11 s per pair at
    n = 64-128 on 2 CPU cores, too slow for 15 pairs. Budgeted values are upper bounds that can sit
    well above the converged ones (0.08 against 0.06 at n = 128 for one correlated pair); compare
    them between models evaluated with the same settings, not against published numbers.

    Args:
        embeddings: ``(N, M, d)``; mask: ``(N, M)``.
        k: neighbours of the kNN graphs.
        max_windows: windows used, spread evenly in time (the geodesic distances cost O(n^3)).
        gw_iterations: outer iterations of the GW solves.

    Returns:
        ``{"a|b": {"neighbourhood_preservation", "gw_discrepancy", "n"}}``; empty with fewer than
        ``k + 2`` complete windows or one modality.
    """
    from structalign_ros.core.learn.kernels import knn_geodesic_distances
    from structalign_ros.core.ot import OTConvergenceWarning, gromov_wasserstein2

    m = len(modalities)
    rows = mask.all(1).nonzero().squeeze(1)
    rows = rows[_even(len(rows), max_windows)]
    if len(rows) < k + 2 or m < 2:
        return {}
    z = embeddings[rows].double().transpose(0, 1)  # (M, n, d)
    first, second = torch.triu_indices(m, m, offset=1)  # (P,)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", OTConvergenceWarning)  # a fixed budget, see the docstring
        D = knn_geodesic_distances(z, k)  # (M, n, n)
        Df = D.float()
        gw = gromov_wasserstein2(
            Df[first], Df[second], epsilon=0.05, max_iter=gw_iterations, inner_max_iter=50
        )  # (P,)
    out: dict[str, dict[str, float]] = {}
    for p, (a, b) in enumerate(zip(first.tolist(), second.tolist(), strict=True)):
        out[f"{modalities[a]}|{modalities[b]}"] = {
            "neighbourhood_preservation": neighbourhood_preservation(z[a], z[b], k),
            "gw_discrepancy": float(gw[p]),
            "n": len(rows),
        }
    return out


def contact_probe(
    features: Tensor, labels: Tensor, groups: Tensor, ridge: float = 1e-2
) -> dict[str, float] | None:
    """Linear-probe contact accuracy, fitted and tested on different episodes.

    With two or more episodes (``groups``), leave-one-episode-out: each episode is tested with a
    probe fitted on the others, and the accuracies are averaged weighted by window count. With one
    episode, the probe is fitted on its first half in time and tested on the second: never a split
    by window, whose neighbours in time would leak into the test set.

    Args:
        features: ``(N, D)``; labels: ``(N,)`` long; groups: ``(N,)`` episode index, windows in time
            order within an episode.

    Returns:
        ``{"accuracy", "majority", "positive_rate", "n"}``, or None when a fit or a test set would be
        empty. ``majority`` is the accuracy of always answering the training folds' majority class.
    """
    folds = []
    ids = groups.unique()
    if len(ids) >= 2:
        folds = [(groups != g, groups == g) for g in ids]
    else:
        half = torch.arange(len(labels)) < len(labels) // 2
        folds = [(half, ~half)]
    correct = majority = total = 0.0
    for train, test in folds:
        if int(train.sum()) < 2 or int(test.sum()) < 1:
            return None
        acc = linear_probe_accuracy(features[train], labels[train], features[test], labels[test], ridge)
        n = float(test.sum())
        common = int(labels[train].mode().values)
        correct += acc * n
        majority += float((labels[test] == common).double().sum())
        total += n
    return {
        "accuracy": correct / total,
        "majority": majority / total,
        "positive_rate": float(labels.double().mean()),
        "n": len(labels),
    }


@dataclass
class Collected:
    """A model's outputs over many windows, with what the metrics need beside them.

    Attributes:
        out: :class:`ModelOutput` concatenated over all windows (CPU).
        mask: ``(N, M)``; modalities: the M names.
        pose: ``(N, 7)`` ground truth, NaN rows for windows without one; None when none had one.
        contact: ``(N,)`` labels from :func:`contact_labels`.
        groups: ``(N,)`` episode index of every window.
        stamps_ns: ``(N,)`` pivot stamps, or None when some batch had none.
    """

    out: ModelOutput
    mask: Tensor
    modalities: tuple[str, ...]
    pose: Tensor | None
    contact: Tensor
    groups: Tensor
    stamps_ns: Tensor | None = None


def predict(model: Any, batch: Batch) -> ModelOutput:
    """``model`` (a :class:`MultimodalModel` or a :class:`runtime.Predictor`) on ``batch``, CPU outputs."""
    if isinstance(model, MultimodalModel):
        was = model.training
        model.eval()
        try:
            device = next(model.parameters()).device
            with torch.inference_mode():
                b = batch.to(device)
                out = model(b.inputs, b.mask)
        finally:
            model.train(was)
        return ModelOutput(*(t.float().cpu() for t in out))
    return model(batch)  # a runtime.Predictor


def collect(
    model: Any,
    batches: Iterable[Batch | tuple[Batch, Any, Any]],
) -> Collected:
    """Run ``model`` over ``batches`` and keep outputs, masks, poses and contact labels.

    Args:
        model: a :class:`MultimodalModel` or anything called as ``model(batch) -> ModelOutput``
            (a :class:`runtime.Predictor`, torch or ONNX Runtime).
        batches: :class:`Batch` objects, or ``(batch, speed, group)`` with ``speed`` ``(B,)`` object
            speeds (or None) for :func:`contact_labels` and ``group`` the episode index (an int or
            ``(B,)``); a bare batch is episode 0 with tactile-only contact.
    """
    outs: list[ModelOutput] = []
    masks, poses, contacts, groups, stamps = [], [], [], [], []
    modalities: tuple[str, ...] = ()
    for item in batches:
        batch, speed, group = item if isinstance(item, tuple) else (item, None, 0)
        modalities = batch.modalities
        outs.append(predict(model, batch))
        masks.append(batch.mask.cpu())
        unknown = torch.full((len(batch), 7), float("nan"))
        poses.append(unknown if batch.pose is None else batch.pose.cpu().float())
        contacts.append(contact_labels(batch, speed))
        groups.append(torch.as_tensor(group, dtype=torch.long).expand(len(batch)))
        stamps.append(batch.stamps_ns.cpu() if len(batch.stamps_ns) == len(batch) else None)
    if not outs:
        raise ValueError("no windows to evaluate")
    out = ModelOutput(*(torch.cat(parts) for parts in zip(*outs, strict=True)))
    pose = torch.cat(poses)
    labelled = pose.isfinite().all(1)
    return Collected(
        out,
        torch.cat(masks),
        modalities,
        pose if labelled.any() else None,
        torch.cat(contacts),
        torch.cat(groups),
        None if any(t is None for t in stamps) else torch.cat(stamps).long(),
    )


def evaluate(
    model: Any,
    batches: Iterable[Batch | tuple[Batch, Any, Any]] | Collected,
    *,
    lambdas: Tensor | None = None,
    max_windows: int = 512,
    geometry_windows: int = 64,
    k: int = 5,
) -> dict[str, Any]:
    """Every evaluation number for ``model`` on ``batches`` (see :func:`collect` for their forms).

    Args:
        lambdas: ``(M,)`` the learned global modality weights; taken from a :class:`MultimodalModel`
            when not given.
        max_windows, geometry_windows, k: see :func:`retrieval` and :func:`geometry`.

    Returns:
        A JSON-ready dict: ``windows``, ``episodes``, ``pose`` (:func:`pose_errors`, or None without
        ground truth), ``contact`` (``fused`` and per-modality probes, :func:`contact_probe`),
        ``retrieval``, ``geometry``, ``lambda`` (global) and ``lambda_mean`` (per-window weights
        averaged, i.e. what fusion really used).
    """
    data = batches if isinstance(batches, Collected) else collect(model, batches)
    names = data.modalities
    if lambdas is None and isinstance(model, MultimodalModel):
        lambdas = model.lambdas.detach().cpu()
    labelled = None if data.pose is None else data.pose.isfinite().all(1)
    contact: dict[str, Any] = {"fused": contact_probe(data.out.fused, data.contact, data.groups)}
    for m, name in enumerate(names):
        rows = data.mask[:, m]
        contact[name] = contact_probe(data.out.embeddings[rows, m], data.contact[rows], data.groups[rows])
    return {
        "windows": len(data.mask),
        "episodes": len(data.groups.unique()),
        "modalities": list(names),
        "pose": None if data.pose is None else pose_errors(data.out.pose[labelled], data.pose[labelled]),
        "contact": contact,
        "retrieval": retrieval(
            data.out.embeddings, data.mask, names, max_windows, stamps_ns=data.stamps_ns, groups=data.groups
        ),
        "geometry": geometry(data.out.embeddings, data.mask, names, k, geometry_windows),
        "lambda": None if lambdas is None else dict(zip(names, map(float, lambdas), strict=True)),
        "lambda_mean": dict(zip(names, map(float, data.out.weights.mean(0)), strict=True)),
    }
