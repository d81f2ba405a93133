"""Where a model's end-effector output stands: its error beside the baselines', per sensor condition.

Conditions: ``all`` (every sensor as recorded), ``-NAME`` (that modality masked, as when its topic
falls silent) and ``~NAME`` (Gaussian noise at the modality's own per-channel std over the test
windows, :func:`batch.channel_std`). The model and every baseline (:mod:`core.learn.baselines`) see the
same windows under each condition; a baseline that reads a masked modality's values is not
applicable there (the joint baselines without joints) and is left out of that condition's best.
Used by ``structalign eval`` and ``bench/bench_quality.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from structalign_ros.core.data.batch import Batch, add_noise, channel_std, concat
from structalign_ros.core.eval.evaluation import pose_errors, predict
from structalign_ros.core.learn.baselines import JOINT_BASELINES, Predict


def model_pose(model: Any, chunk: int = 256) -> Callable[[Batch], Tensor]:
    """``batch -> (N, 9)`` the pose output of ``model`` (see :func:`evaluation.predict`), in chunks."""

    def run(batch: Batch) -> Tensor:
        parts = [
            predict(model, batch.select(torch.arange(i, min(i + chunk, len(batch))))).pose
            for i in range(0, len(batch), chunk)
        ]
        return torch.cat(parts)

    return run


def leave_one_episode_out(
    episodes: list[Batch], kinds: Mapping[str, str], fit: Callable[[Batch], Mapping[str, Predict]]
) -> dict[str, Predict]:
    """Baselines for the concatenation of ``episodes`` (in that order), each episode predicted by
    baselines ``fit`` on all the others. The predictors must be called on batches whose rows follow
    that concatenation (every :func:`apply_condition` of it does)."""
    if len(episodes) < 2:
        raise ValueError("leave-one-episode-out needs at least two episodes (or give training bags)")
    sizes = [len(e) for e in episodes]
    fits = [fit(concat([e for j, e in enumerate(episodes) if j != i])) for i in range(len(episodes))]
    bounds = torch.tensor([0, *sizes]).cumsum(0).tolist()

    def stitched(name: str) -> Predict:
        def run(batch: Batch) -> Tensor:
            if len(batch) != bounds[-1]:
                raise ValueError(f"expected the {bounds[-1]} windows the baselines were fitted around")
            parts = [
                f[name](batch.select(torch.arange(a, b)))
                for f, a, b in zip(fits, bounds, bounds[1:], strict=False)
            ]
            return torch.cat(parts)

        return run

    return {name: stitched(name) for name in fits[0]}


def conditions(modalities: tuple[str, ...]) -> list[str]:
    """``all``, then ``-NAME`` and ``~NAME`` for every modality."""
    return ["all"] + [f"{op}{n}" for n in modalities for op in ("-", "~")]


def apply_condition(batch: Batch, condition: str, kinds: Mapping[str, str], seed: int = 0) -> Batch:
    """``batch`` under ``condition``: a masked modality's inputs are zeroed, a noised one's present
    windows get noise (seeded, so model and baselines see the same noisy windows)."""
    if condition == "all":
        return batch
    op, name = condition[0], condition[1:]
    m = batch.modalities.index(name)
    inputs, mask = dict(batch.inputs), batch.mask.clone()
    if op == "-":
        mask[:, m] = False
        inputs[name] = torch.zeros_like(inputs[name])
    else:
        present = mask[:, m]
        if present.sum() >= 2:
            x = inputs[name].clone()
            gen = torch.Generator().manual_seed(seed)
            std = channel_std(kinds[name], x[present])
            x[present] = add_noise(kinds[name], x[present], std, generator=gen)
            inputs[name] = x
    return Batch(inputs, mask, batch.modalities, batch.stamps_ns, batch.pose)


def _applicable(baseline: str, condition: str, kinds: Mapping[str, str]) -> bool:
    masked = condition[1:] if condition.startswith("-") else None
    return not (masked is not None and kinds[masked] == "joints" and baseline in JOINT_BASELINES)


def _errors(pred: Tensor, pose: Tensor) -> tuple[float, float]:
    e = pose_errors(pred, pose)
    return e["position_mm_mean"], e["orientation_deg_mean"]


def quality_report(
    predict_model: Callable[[Batch], Tensor],
    test: Batch,
    baselines: Mapping[str, Predict],
    kinds: Mapping[str, str],
    only: list[str] | None = None,
) -> dict[str, Any]:
    """Model and baselines on ``test`` (which must carry ``pose``) under every condition.

    Args:
        predict_model: batch -> ``(N, 9)`` the model's pose output.
        only: the conditions to run (default :func:`conditions`).

    Returns:
        condition -> ``{"model_mm", "model_deg", "baselines": {name: {"mm", "deg"}},
        "best_baseline": name, "best_baseline_mm", "ratio"}`` (model over best baseline).
    """
    if test.pose is None:
        raise ValueError("the test windows have no ground-truth pose")
    report: dict[str, Any] = {}
    for cond in only or conditions(test.modalities):
        batch = apply_condition(test, cond, kinds)
        mm, deg = _errors(predict_model(batch), test.pose)
        scored = {
            name: dict(zip(("mm", "deg"), _errors(fn(batch), test.pose), strict=True))
            for name, fn in baselines.items()
            if _applicable(name, cond, kinds)
        }
        best = min(scored, key=lambda n: scored[n]["mm"])
        report[cond] = {
            "model_mm": mm,
            "model_deg": deg,
            "baselines": scored,
            "best_baseline": best,
            "best_baseline_mm": scored[best]["mm"],
            "ratio": mm / max(scored[best]["mm"], 1e-12),
        }
    return report


def format_quality(report: Mapping[str, Any]) -> str:
    """The report as a table: one row per condition, model then each baseline (mm / deg)."""
    names = list(next(iter(report.values()))["baselines"])
    head = f"{'condition':<14} {'model':>14} " + " ".join(f"{n:>18}" for n in names) + f" {'x best':>7}"
    lines = ["EE pose error, mm / deg (same windows)", head]
    for cond, row in report.items():
        cells = []
        for n in names:
            b = row["baselines"].get(n)
            cells.append(f"{'n/a':>18}" if b is None else f"{b['mm']:>10.2f} / {b['deg']:>5.2f}")
        model = f"{row['model_mm']:>7.2f} / {row['model_deg']:>5.2f}"
        lines.append(f"{cond:<14} {model:>14} " + " ".join(cells) + f" {row['ratio']:>7.2f}")
    return "\n".join(lines)
